"""`instret models ...`, `ensure_models_present` and `instret doctor` against the loopback server.

Every Ollama call goes through the real `ollama` client over HTTP to `tests/helpers/loopback.py`; the
doctor also loads the real default embedder and opens a real embedded Chroma store.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


from helpers import free_port  # noqa: E402
from helpers.loopback import LoopbackServer  # noqa: E402

from instret.cli.main import main  # noqa: E402
from instret.lm.checks import ensure_models_present  # noqa: E402
from instret.lm.servers.ollama import OllamaUnavailable, list_models, pull_model, show_model  # noqa: E402
from instret.lm.spec import ModelSpec  # noqa: E402


@pytest.fixture
def server():
    with LoopbackServer(models=("m",)) as srv:
        yield srv


@pytest.fixture
def doctor_env(monkeypatch, tmp_path):
    """Teacher and student from the environment, the default embedder, no stray instret.toml."""
    monkeypatch.chdir(tmp_path)
    for name in ("INSTRET_CONFIG", "INSTRET_EMBEDDER", "INSTRET_EMBEDDER_API_BASE"):
        monkeypatch.delenv(name, raising=False)

    def point_at(url: str, model: str = "ollama_chat/m") -> None:
        for role in ("TEACHER", "STUDENT"):
            monkeypatch.setenv(f"INSTRET_{role}", model)
            monkeypatch.setenv(f"INSTRET_{role}_API_BASE", url)

    return point_at


def lines_with(output: str, word: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(word)]


# ---------------------------------------------------------------- list / show / pull


def test_list_and_show_report_names_and_context_length(server):
    server.models.add("qwen2.5:3b")
    assert [model.name for model in list_models(server.url)] == ["m:latest", "qwen2.5:3b"]
    assert list_models(server.url)[0].quantization == "Q4_K_M"

    info = show_model("ollama_chat/m", server.url)  # a model string's provider prefix is dropped
    assert (info.name, info.context_length, info.num_ctx) == ("m:latest", 32768, None)
    assert server.requests_for("/api/show")[-1].body["model"] == "m"

    server.parameters["num_ctx"] = "8192"  # a Modelfile `PARAMETER num_ctx 8192`
    server.context_length = 131072
    info = show_model("m", server.url)
    assert (info.context_length, info.num_ctx) == (131072, 8192)


def test_pull_streams_progress_in_bytes(server, capsys):
    assert pull_model("qwen2.5:3b", server.url) == "success"
    assert "qwen2.5:3b" in server.models
    bar = capsys.readouterr().err
    assert "pulling qwen2.5:3b" in bar and "100%" in bar and "977k/977k" in bar  # 1,000,000 bytes in KiB
    assert server.requests_for("/api/pull")[-1].body["stream"] is True


def test_cli_models_list_pull_show(server, capsys):
    assert main(["models", "pull", "qwen2.5:3b", "--host", server.url, "--no-progress"]) == 0
    assert "qwen2.5:3b: success" in capsys.readouterr().out

    assert main(["models", "list", "--host", server.url]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split()[:2] == ["NAME", "SIZE"]
    assert "m:latest" in listing and "qwen2.5:3b" in listing

    assert main(["models", "show", "qwen2.5:3b", "--host", server.url]) == 0
    assert "32768 tokens" in capsys.readouterr().out

    assert main(["models", "show", "absent", "--host", server.url]) == 1
    assert "instret models pull absent" in capsys.readouterr().err


def test_cli_pull_with_server_down_says_how_to_start_it(capsys):
    down = f"http://127.0.0.1:{free_port()}"
    assert main(["models", "pull", "qwen2.5:3b", "--host", down, "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert f"no Ollama server answers at {down}" in error and "`ollama serve`" in error
    with pytest.raises(OllamaUnavailable):
        list_models(down)


# ---------------------------------------------------------------- checks before long runs


def test_ensure_models_present_names_the_pull_command(server):
    down = f"http://127.0.0.1:{free_port()}"
    specs = [ModelSpec("ollama_chat/m", api_base=server.url),
             ModelSpec("ollama_chat/qwen2.5:14b", api_base=server.url),
             ModelSpec("openai/m", api_base=server.url + "/v1"),  # answers /v1/models
             ModelSpec("anthropic/claude-sonnet-4"),  # hosted: never probed
             "all-MiniLM-L6-v2"]  # in-process embedder: no server
    (missing,) = ensure_models_present(specs)
    assert "does not have qwen2.5:14b" in missing
    assert "`ollama pull qwen2.5:14b`" in missing and f"`instret models pull qwen2.5:14b --host {server.url}`" in missing

    server.models.add("qwen2.5:14b")
    assert ensure_models_present(specs) == []

    problems = ensure_models_present({"teacher": ModelSpec("ollama_chat/m", api_base=down),
                                      "student": ModelSpec("openai/m", api_base=down + "/v1")})
    assert len(problems) == 2
    assert "`ollama serve`" in problems[0] and "INSTRET_TEACHER_API_BASE" in problems[0]
    assert "no OpenAI-compatible server answers" in problems[1]


def test_server_problem_for_a_dspy_lm_uses_the_same_check(server):
    from instret.lm.models import make_lm
    from instret.lm.checks import server_problem

    assert server_problem(make_lm(ModelSpec("ollama_chat/m", api_base=server.url))) is None
    problem = server_problem(make_lm(ModelSpec("ollama_chat/absent", api_base=server.url)))
    assert "`ollama pull absent`" in problem
    down = make_lm(ModelSpec("ollama_chat/m", api_base=f"http://127.0.0.1:{free_port()}"))
    assert "`ollama serve`" in server_problem(down)


# ---------------------------------------------------------------- instret doctor


def test_doctor_all_ok_with_the_server_up(server, doctor_env, capsys):
    doctor_env(server.url)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert lines_with(out, "PROBLEM") == []
    for check in ("teacher server", "teacher model", "teacher context", "student server", "student model",
                  "student context", "embedder", "chroma (embedded)"):
        assert any(line.split(None, 1)[1].startswith(check + ":") for line in lines_with(out, "OK")), check
    assert "trained window 32768 tokens" in out
    assert "loads offline and encodes a sentence to 384 dimensions" in out
    assert "All 8 checks passed." in out


def test_doctor_with_the_server_down(doctor_env, capsys):
    doctor_env(f"http://127.0.0.1:{free_port()}")
    chroma = f"http://127.0.0.1:{free_port()}"
    assert main(["doctor", "--chroma-url", chroma]) == 1
    out = capsys.readouterr().out
    problems = lines_with(out, "PROBLEM")
    assert [line.split(":")[0].split(None, 1)[1] for line in problems] == ["teacher server", "student server",
                                                                          "chroma server"]
    assert all("`ollama serve`" in line for line in problems[:2])
    assert "`chroma run" in problems[2]
    assert any(line.startswith("OK       embedder:") for line in out.splitlines())  # still checked


def test_doctor_with_a_model_missing_from_a_config_file(server, doctor_env, monkeypatch, tmp_path, capsys):
    for name in ("INSTRET_TEACHER", "INSTRET_STUDENT", "INSTRET_TEACHER_API_BASE", "INSTRET_STUDENT_API_BASE"):
        monkeypatch.delenv(name, raising=False)  # the environment would override the file
    config = tmp_path / "models.toml"
    config.write_text(f'[teacher]\nmodel = "ollama_chat/m"\napi_base = "{server.url}"\nnum_ctx = 65536\n'
                      f'[student]\nmodel = "ollama_chat/qwen2.5:3b"\napi_base = "{server.url}"\n')
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"settings: {config}" in out
    problems = lines_with(out, "PROBLEM")
    assert len(problems) == 2
    assert "teacher context" in problems[0] and "lower num_ctx to at most 32768" in problems[0]
    assert "student model" in problems[1] and "`ollama pull qwen2.5:3b`" in problems[1]


def test_help_stays_fast_and_light():
    probe = ("import sys, time; t = time.perf_counter(); from instret.cli.main import main\n"
             "for argv in (['--help'], ['doctor', '--help'], ['models', 'pull', '--help']):\n"
             "    try: main(argv)\n"
             "    except SystemExit: pass\n"
             "heavy = [m for m in ('ollama', 'httpx', 'tqdm', 'chromadb', 'torch', 'dspy', 'litellm') if m in sys.modules]\n"
             "print('RESULT', heavy, time.perf_counter() - t)")
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    heavy, seconds = output.split("RESULT ", 1)[1].rsplit(" ", 1)
    assert heavy == "[]"  # the real check: nothing heavy loads for --help
    assert "doctor" in output and "--chroma-url" in output
    assert float(seconds) < 2  # ~0.05 s idle; generous for a shared, loaded machine
