"""Settings (TOML, then environment, then flags), model strings → `dspy.LM`, and keeping API keys out of files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import instret._env  # noqa: F401  (before litellm: no network at import)
from instret.teaching.build import _public_teacher
from instret.cli.main import main
from instret.lm.config import DEFAULT_EMBEDDER, DEFAULT_STUDENT, DEFAULT_TEACHER, ROLES, ConfigError, load_settings
from instret.corpus.manifest import MANIFEST, Manifest
from instret.lm.models import DEFAULT_OLLAMA_BASE, ModelSpec, backend_of, make_lm

SECRET = "sk-PLANTED-SECRET"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No instret, Ollama or OpenAI settings from the machine running the tests; an empty cwd."""
    for key in list(os.environ):
        if key.startswith("INSTRET_") or key in ("OLLAMA_HOST", "OPENAI_API_KEY"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _full_file(tmp_path: Path) -> Path:
    return _toml(tmp_path / "settings.toml", "".join(
        f'[{role}]\nmodel = "file/{role}"\napi_base = "http://file-{role}:1"\n' for role in ROLES))


# --- load_settings ----------------------------------------------------------------------------------------


def test_defaults_without_file_env_or_flags():
    settings = load_settings(env={})
    assert (settings.teacher.model, settings.student.model, settings.embedder.model) == (
        DEFAULT_TEACHER, DEFAULT_STUDENT, DEFAULT_EMBEDDER)
    assert settings.teacher.api_base is None and settings.source is None


@pytest.mark.parametrize("role", ROLES)
def test_file_then_env_then_flag(role, tmp_path):
    path = _full_file(tmp_path)
    ROLE = role.upper()

    spec = getattr(load_settings(path, env={}), role)
    assert (spec.model, spec.api_base) == (f"file/{role}", f"http://file-{role}:1")

    env = {f"INSTRET_{ROLE}": f"env/{role}", f"INSTRET_{ROLE}_API_BASE": f"http://env-{role}:2"}
    spec = getattr(load_settings(path, env=env), role)
    assert (spec.model, spec.api_base) == (f"env/{role}", f"http://env-{role}:2")

    flags = {role: f"flag/{role}", f"{role}_api_base": f"http://flag-{role}:3"}
    spec = getattr(load_settings(path, env=env, **flags), role)
    assert (spec.model, spec.api_base) == (f"flag/{role}", f"http://flag-{role}:3")

    # A flag for the model alone keeps the env's api_base while the backend stays the same ...
    spec = getattr(load_settings(path, env=env, **{role: f"env/other-{role}"}), role)
    assert (spec.model, spec.api_base) == (f"env/other-{role}", f"http://env-{role}:2")
    # ... and drops it for another backend, where that URL means nothing.
    spec = getattr(load_settings(path, env=env, **{role: f"flag/{role}"}), role)
    assert (spec.model, spec.api_base) == (f"flag/{role}", None)
    # ... and one role's overrides never touch another's.
    others = [getattr(load_settings(path, env=env, **flags), other) for other in ROLES if other != role]
    assert all(o.model.startswith("file/") and o.api_base.startswith("http://file-") for o in others)


def test_empty_values_do_not_override(tmp_path):
    path = _full_file(tmp_path)
    settings = load_settings(path, env={"INSTRET_TEACHER": "", "INSTRET_TEACHER_API_BASE": ""}, teacher=None,
                             teacher_api_base="")
    assert (settings.teacher.model, settings.teacher.api_base) == ("file/teacher", "http://file-teacher:1")


def test_which_file_is_read(tmp_path, monkeypatch):
    _toml(tmp_path / "instret.toml", '[teacher]\nmodel = "cwd/teacher"\n')
    other = _toml(tmp_path / "other.toml", '[teacher]\nmodel = "other/teacher"\n')
    explicit = _toml(tmp_path / "explicit.toml", '[teacher]\nmodel = "explicit/teacher"\n')
    assert load_settings(env={}).teacher.model == "cwd/teacher"  # ./instret.toml when present
    assert load_settings(env={}).source == "instret.toml"
    assert load_settings(env={"INSTRET_CONFIG": str(other)}).teacher.model == "other/teacher"
    assert load_settings(explicit, env={"INSTRET_CONFIG": str(other)}).teacher.model == "explicit/teacher"
    monkeypatch.setenv("INSTRET_CONFIG", str(other))  # env=None reads the process environment
    monkeypatch.setenv("INSTRET_STUDENT", "env/student")
    settings = load_settings()
    assert (settings.teacher.model, settings.student.model, settings.source) == (
        "other/teacher", "env/student", str(other))


def test_other_spec_keys_pass_through(tmp_path):
    path = _toml(tmp_path / "instret.toml", '[student]\nmodel = "ollama_chat/qwen2.5:3b"\nnum_ctx = 8192\n'
                                            'max_tokens = 512\ntemperature = 0.0\ntimeout = 30\n'
                                            '[student.extra]\ncache = false\n')
    spec = load_settings(path, env={}).student
    assert (spec.num_ctx, spec.max_tokens, spec.temperature, spec.timeout, spec.extra) == (
        8192, 512, 0.0, 30, {"cache": False})
    assert make_lm(spec).kwargs["num_ctx"] == 8192


@pytest.mark.parametrize("text, expected", [
    ('[teachr]\nmodel = "x"\n', "unknown sections ['teachr']"),
    ('[teacher]\nmodle = "x"\n', "[teacher] has unknown keys ['modle']"),
    ('[embedder]\nmodel = "x"\nbase_url = "http://x"\n', "[embedder] has unknown keys ['base_url']"),
    ('[teacher\nmodel = "x"\n', ""),  # not TOML at all
])
def test_file_errors_name_the_file(tmp_path, text, expected):
    path = _toml(tmp_path / "broken.toml", text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert str(error.value).startswith(f"{path}:") and expected in str(error.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="nope.toml does not exist"):
        load_settings(env={"INSTRET_CONFIG": str(tmp_path / "nope.toml")})


def test_cli_reports_config_errors_with_the_file(tmp_path, capsys):
    path = _toml(tmp_path / "instret.toml", '[teacher]\nmodle = "x"\n')
    assert main(["--config", str(path), "corpus", "build", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"instret: error: {path}:") and "modle" in error
    assert main(["corpus", "build", "--no-progress"]) == 2  # found as ./instret.toml too
    assert "instret.toml: [teacher] has unknown keys ['modle']" in capsys.readouterr().err


# --- make_lm ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["ollama_chat/qwen2.5:3b", "ollama/qwen2.5:3b"])
def test_ollama_is_pinned_to_litellm_with_num_ctx(model):
    lm = make_lm(ModelSpec(model, api_base="http://gpu-box:11434/", num_ctx=8192, max_tokens=256,
                           temperature=0.0, timeout=30))
    assert lm._engine_spec == "litellm" and lm.model == model
    assert lm.kwargs["api_base"] == "http://gpu-box:11434"  # trailing slash dropped
    assert lm.kwargs["num_ctx"] == 8192
    assert (lm.kwargs["max_tokens"], lm.kwargs["temperature"], lm.kwargs["timeout"]) == (256, 0.0, 30)
    assert "api_key" not in lm.kwargs  # Ollama needs none; none is invented


def test_ollama_without_api_base_uses_ollama_host(monkeypatch):
    assert make_lm("ollama_chat/qwen2.5:3b").kwargs["api_base"] == DEFAULT_OLLAMA_BASE
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11434")  # how `ollama` itself accepts it: no scheme
    assert make_lm("ollama_chat/qwen2.5:3b").kwargs["api_base"] == "http://gpu-box:11434"
    monkeypatch.setenv("OLLAMA_HOST", "https://ollama.internal")
    assert make_lm("ollama_chat/qwen2.5:3b").kwargs["api_base"] == "https://ollama.internal"
    assert make_lm("ollama_chat/qwen2.5:3b", api_base="http://explicit:1").kwargs["api_base"] == "http://explicit:1"


def test_openai_compatible_server_gets_a_placeholder_key_and_no_num_ctx(monkeypatch):
    lm = make_lm(ModelSpec("openai/Qwen2.5-3B-Instruct", api_base="http://localhost:8000/v1", num_ctx=8192))
    assert lm._engine_spec == "lm15"  # DSPy's native engine: a third of litellm's CPU per call
    with_headers = ModelSpec("openai/m", api_base="http://localhost:8000/v1", extra={"extra_headers": {"X": "1"}})
    assert make_lm(with_headers)._engine_spec == "litellm"  # a client setting only litellm carries
    assert lm.kwargs["api_base"] == "http://localhost:8000/v1"
    assert lm.kwargs["api_key"] == "not-needed"
    assert "num_ctx" not in lm.kwargs  # an Ollama option; OpenAI-compatible servers would reject it

    assert make_lm("openai/m", api_base="http://localhost:8000/v1", api_key="sk-mine").kwargs["api_key"] == "sk-mine"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert "api_key" not in make_lm("openai/m", api_base="http://localhost:8000/v1").kwargs  # litellm reads the env


def test_hosted_models_get_no_api_base_and_no_placeholder():
    for model in ("openai/gpt-4o-mini", "gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"):
        lm = make_lm(model, num_ctx=8192)
        assert lm._engine_spec == "litellm"
        assert not {"api_base", "api_key", "num_ctx"} & set(lm.kwargs), model
    assert backend_of("gpt-4o-mini") == "openai" and backend_of("ollama/x") == backend_of("ollama_chat/x") == "ollama"


def test_extra_options_reach_the_lm_and_overrides_win():
    spec = ModelSpec("ollama_chat/qwen2.5:3b", num_ctx=2048, extra={"cache": False, "num_retries": 0})
    lm = make_lm(spec, num_ctx=4096, api_base=None)
    assert lm.cache is False and lm.num_retries == 0
    assert lm.kwargs["num_ctx"] == 4096
    assert spec.num_ctx == 2048  # the spec itself is frozen and unchanged


# --- API keys stay out of everything instret writes ------------------------------------------------------


def test_public_dict_and_repr_never_hold_the_key():
    spec = ModelSpec("openai/gpt-4o-mini", api_base="http://localhost:8000/v1", api_key=SECRET, max_tokens=100)
    assert spec.public_dict() == {"model": "openai/gpt-4o-mini", "api_base": "http://localhost:8000/v1",
                                  "max_tokens": 100}
    assert SECRET not in repr(spec) and SECRET not in str(spec)
    assert SECRET not in json.dumps(spec.public_dict())
    assert make_lm(spec).kwargs["api_key"] == SECRET  # it does reach the server


def test_public_teacher_and_manifest_drop_the_key(tmp_path):
    spec = ModelSpec("openai/gpt-4o-mini", api_base="http://localhost:8000/v1", api_key=SECRET)
    lm = make_lm(spec)
    assert _public_teacher(spec) == spec.public_dict()
    assert _public_teacher(lm) == {"model": "openai/gpt-4o-mini"}  # an LM: only its model string
    assert _public_teacher("openai/gpt-4o-mini") == {"model": "openai/gpt-4o-mini"}
    for teacher in (spec, lm):
        folder = tmp_path / type(teacher).__name__
        Manifest(domain="math", embedder_id="e", embedder_dimension=3, clustering={},
                 teacher=_public_teacher(teacher), guide_style="concise", sources=[], question_ids=[],
                 store={"path": "chroma", "name": "x"}).save(folder)
        assert SECRET.encode() not in (folder / MANIFEST).read_bytes()
        assert Manifest.load(folder).teacher["model"] == "openai/gpt-4o-mini"


@pytest.mark.slow
def test_a_build_with_a_keyed_teacher_spec_writes_the_key_nowhere(tmp_path, sample_questions, embedder):
    """A real build given a `ModelSpec` teacher carrying a key; the guides come from the scripted LM.

    The spec goes through `make_lm` as any teacher does; the writer then answers from the
    scripted engine (an inner `dspy.context`), so no request leaves the process.
    """
    import dspy
    from helpers.scripted import guide_response, scripted_lm
    from sklearn.cluster import KMeans

    from instret import CorpusBuilder, GuideWriter, NoReduction, build_corpus

    scripted, engine = scripted_lm(guide_response)
    real_writer = GuideWriter()

    def writer(**inputs):
        with dspy.context(lm=scripted):
            return real_writer(**inputs)

    spec = ModelSpec("openai/gpt-4o-mini", api_base="https://llm.example.invalid/v1", api_key=SECRET,
                     max_tokens=2000)
    builder = CorpusBuilder(embedder=embedder, reducer=NoReduction(), map_reducer=None,
                            clusterer=KMeans(n_clusters=3, n_init=3, random_state=0))
    folder = tmp_path / "keyed"
    report = build_corpus(sample_questions[:30], folder, domain="grade-school math", teacher=spec, embedder=embedder,
                          builder=builder, writer=writer, check_teacher=False, progress=False)
    assert report.complete and engine.calls == report.n_clusters == 3
    assert Manifest.load(folder).teacher == spec.public_dict()

    files = [path for path in folder.rglob("*") if path.is_file()]
    assert {MANIFEST, "guides.jsonl", "embeddings.sqlite"} <= {path.name for path in files}
    assert any(path.suffix == ".sqlite3" for path in files)  # the Chroma store is searched too
    leaking = [str(path.relative_to(folder)) for path in files if SECRET.encode() in path.read_bytes()]
    assert leaking == []
