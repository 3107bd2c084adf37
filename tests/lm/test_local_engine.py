"""The embedded llama.cpp engine on a tiny GGUF model made by the test (tests/helpers/local_tiny.py).

Real llama.cpp servers in this process: started at the first request, shared, stopped at exit;
bad files, a taken port and a damaged cache each give a message that says what to do.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import dspy
import pytest
from helpers.local_tiny import write_tiny_adapter, write_tiny_model

from instret.lm.local import catalog
from instret.lm.local.catalog import CatalogEntry
from instret.lm.local.engine import LocalEngineError, local_server, parse_local, running_servers, stop_all
from instret.lm.checks import local_checks
from instret.lm.local.lm import LocalEngine
from instret.lm.models import make_lm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gguf")
    model = write_tiny_model(folder / "tiny.gguf")
    return {"model": model, "adapter": write_tiny_adapter(folder / "tiny-lora.gguf"), "folder": folder}


@pytest.fixture(autouse=True)
def no_servers_left():
    yield
    stop_all()


def local(path: Path, suffix: str = "") -> str:
    return f"local/{path}{suffix}"  # an absolute path: local//tmp/.../tiny.gguf


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_the_server_starts_at_the_first_request_and_is_shared(files):
    lm = make_lm(local(files["model"]), max_tokens=4, temperature=0.0)
    assert lm.model.startswith("openai/tiny-") and running_servers() == []  # nothing loaded by make_lm

    assert isinstance(lm("hello")[0], str)
    (server,) = running_servers()
    assert get(f"{server.url}/health") == {"status": "ok"}
    assert server.url.startswith("http://127.0.0.1:")

    other = make_lm(local(files["model"]), max_tokens=2)  # another LM, even another role: same server
    other("again")
    assert running_servers() == [server]
    slots = get(f"{server.url}/slots")
    assert len(slots) == 4 and {slot["n_ctx"] for slot in slots} == {512}  # 4 slots, capped at the trained window


def test_a_request_that_needs_more_context_moves_to_a_larger_server(files, tmp_path):
    """The tiny model's tokenizer spends one token per byte, 2.5 times the estimate instret plans
    with, so these prompts also overflow the window chosen for them and take the retry path."""
    long_model = write_tiny_model(tmp_path / "long.gguf", context=32768)
    lm = make_lm(local(long_model), max_tokens=8, extra={"cache": False})
    lm("short")
    (small,) = running_servers()
    assert small.n_ctx == 4096
    lm("abc " * 1500)  # estimated to fit 4,096 tokens; llama.cpp counts 9,054 and says so: retried on 16,384
    assert [server.n_ctx for server in running_servers()] == [4096, 16384] and small.running
    lm("short again")  # stays on the larger server
    assert len(running_servers()) == 2

    other = write_tiny_model(tmp_path / "other.gguf", context=32768)
    make_lm(local(other), max_tokens=8, extra={"cache": False})("word " * 2400)
    # estimated at 4,800 tokens, so its first server holds 8,192; the real 16,854 then need 32,768
    assert [server.n_ctx for server in running_servers() if server.weights == other] == [8192, 32768]


def test_log_probabilities_come_back_through_dspy(files):
    lm = make_lm(local(files["model"]), max_tokens=3, temperature=0.0,
                 extra={"logprobs": True, "top_logprobs": 2, "cache": False})
    (output,) = lm("hi")
    tokens = output["logprobs"]["content"]
    assert 1 <= len(tokens) <= 3 and all(len(token["top_logprobs"]) == 2 for token in tokens)
    assert all(token["logprob"] <= 0 for token in tokens)


def test_lora_adapters_load_with_their_scale(files):
    model = local(files["model"], f"+{files['adapter']}:0.5")
    assert parse_local(model).adapters == ((str(files["adapter"]), 0.5),)
    plain = local_server(local(files["model"]))
    adapted = local_server(model)
    assert adapted is not plain and adapted.model.alias.endswith(":0.5")
    (adapter,) = get(f"{adapted.url}/lora-adapters")
    assert (adapter["path"], adapter["scale"]) == (str(files["adapter"]), 0.5)
    assert get(f"{plain.url}/lora-adapters") == []
    make_lm(model, max_tokens=2)("hi")


def test_a_cached_answer_never_starts_the_server(files, tmp_path):
    cache = dspy.clients.Cache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=str(tmp_path),
                               memory_max_entries=100)
    saved, dspy.cache = dspy.cache, cache
    try:
        make_lm(local(files["model"]), max_tokens=2, temperature=0.0)("the same prompt")
        stop_all()
        make_lm(local(files["model"]), max_tokens=2, temperature=0.0)("the same prompt")  # a rerun: port differs
        assert running_servers() == []
    finally:
        dspy.cache = saved


def test_servers_stop_at_exit(files):
    script = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
              "from instret.lm.local.engine import local_server\n"
              f"print('URL', local_server({local(files['model'])!r}).url, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    url = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("URL"))
    assert f"llama.cpp at {url} stopped" in done.stdout  # by the atexit hook, before the interpreter went
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_a_taken_port_is_named(files):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(LocalEngineError, match=f"port {port} on 127.0.0.1 is taken by another program; leave"):
            local_server(local(files["model"]), port=port)
    assert running_servers() == []


@pytest.mark.parametrize("damage, message", [
    ("missing", r"weights file .*nope\.gguf does not exist"),
    ("junk", r"is not a GGUF file \(its first bytes are not 'GGUF'\)"),
    ("truncated", r"is cut short: 50,000 bytes, but its tensors end at byte 115,136; .* fetch it again"),
    ("header only", r"is damaged or cut short inside its header"),
    ("adapter as model", r"is a LoRA adapter; name a base model first"),
])
def test_bad_weights_files_get_clear_messages(files, tmp_path, damage, message):
    data = files["model"].read_bytes()
    path = tmp_path / "nope.gguf"
    if damage == "junk":
        path.write_bytes(b"PK\x03\x04 not a model" * 100)
    elif damage == "truncated":
        path.write_bytes(data[:50_000])
    elif damage == "header only":
        path.write_bytes(data[:300])
    elif damage == "adapter as model":
        path = files["adapter"]
    with pytest.raises(LocalEngineError, match=message):
        local_server(local(path))
    (check,) = local_checks(local(path), role="student")
    assert not check.ok and check.line().count("student") == 1
    lm = make_lm(local(path), max_tokens=2, num_retries=0)
    with pytest.raises(Exception, match=message):  # at the first request, as DSPy reports it
        lm("hi")


def test_a_model_used_as_an_adapter_is_refused(files):
    with pytest.raises(LocalEngineError, match="is a model, not a LoRA adapter"):
        local_server(local(files["model"], f"+{files['model']}"))


@pytest.mark.parametrize("model, message", [
    ("local/qwen99", r"'qwen99' is neither a catalog model \(qwen2.5-coder-1.5b, .*\) nor a path ending in .gguf"),
    ("local/", "is not a local model"),
    ("local/m.gguf+adapter.bin", r"the LoRA adapter 'adapter.bin' must be a .gguf file"),
])
def test_model_string_mistakes(model, message):
    with pytest.raises(ValueError, match=message):
        make_lm(model)


def test_an_api_base_is_refused(files):
    with pytest.raises(ValueError, match="runs in-process; drop its api_base"):
        make_lm(local(files["model"]), api_base="http://127.0.0.1:8080/v1")


def test_a_catalog_model_is_pulled_at_first_use_and_a_damaged_one_is_named(files, tmp_path, monkeypatch):
    data = files["model"].read_bytes()
    entry = CatalogEntry("tiny", "test", len(data), __import__("hashlib").sha256(data).hexdigest(), None, ("x==1",))
    monkeypatch.setattr(catalog, "CATALOG", {"tiny": entry})
    monkeypatch.setenv("INSTRET_CACHE", str(tmp_path))
    (check,) = local_checks("local/tiny", role="teacher")
    assert check.ok and "not downloaded yet: it is fetched at first use" in check.line()
    with pytest.raises(LocalEngineError, match="run `instret models pull local/tiny`"):  # INSTRET_NO_PULL (conftest)
        local_server("local/tiny")

    pulled = []

    def pull(name, progress=True):
        pulled.append(name)
        catalog.model_path(name).parent.mkdir(parents=True, exist_ok=True)
        catalog.model_path(name).write_bytes(data)
        return catalog.model_path(name)

    monkeypatch.delenv("INSTRET_NO_PULL")
    monkeypatch.setattr(catalog, "pull", pull)
    make_lm("local/tiny", max_tokens=2)("hi")
    assert pulled == ["tiny"] and running_servers()[0].weights == catalog.model_path("tiny")

    stop_all()
    catalog.model_path("tiny").write_bytes(data[:1000])
    checks = local_checks("local/tiny", role="teacher")
    assert "is damaged: run `instret models pull local/tiny` to fetch it again" in checks[-1].line()


def test_engine_state_round_trips(files):
    engine = LocalEngine(local(files["model"], f"+{files['adapter']}"), n_ctx=2048, n_parallel=2)
    again = LocalEngine.load_state(json.loads(json.dumps(engine.dump_state())))
    assert (again.model, again.n_ctx, again.settings) == (engine.model, 2048, {"n_parallel": 2})
    with pytest.raises(ValueError, match="unknown local engine settings"):
        LocalEngine(local(files["model"]), n_gpu=1)


def test_doctor_starts_local_models_and_names_a_bad_file(files, tmp_path, monkeypatch, capsys):
    from instret.cli.main import main

    monkeypatch.chdir(tmp_path)  # no ./instret.toml
    for name in ("INSTRET_CONFIG", "INSTRET_EMBEDDER", "INSTRET_TEACHER_API_BASE", "INSTRET_STUDENT_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INSTRET_TEACHER", local(files["model"]))
    monkeypatch.setenv("INSTRET_STUDENT", local(tmp_path / "missing.gguf"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    teacher = [line for line in out.splitlines() if "teacher" in line]
    assert any("teacher engine: llama.cpp answers at http://127.0.0.1:" in line for line in teacher), out
    assert any("student weights" in line and "missing.gguf does not exist" in line for line in out.splitlines()), out
    assert "1 of" in out and "checks found a problem" in out


def params_sent(monkeypatch) -> list:
    """The CommonParams each server start hands llama.cpp; no server is started."""
    import xllamacpp

    sent = []

    def no_server(params):
        sent.append(params)
        raise RuntimeError("not started by this test")

    monkeypatch.setattr(xllamacpp, "Server", no_server)
    return sent


def test_engine_settings_reach_llama_cpp(files, monkeypatch):
    sent = params_sent(monkeypatch)
    with pytest.raises(LocalEngineError):
        local_server(local(files["model"]), n_parallel=2, n_threads=1, n_threads_batch=2, poll=0)
    (params,) = sent
    assert (params.n_parallel, params.cpuparams.n_threads, params.cpuparams_batch.n_threads) == (2, 1, 2)
    assert params.cpuparams.poll == params.cpuparams_batch.poll == 0
    assert params.cache_prompt and params.hostnames == ["127.0.0.1"]


@pytest.mark.parametrize("idle, threads", [(None, 1), (0.9, 1), (1.8, 2)], ids=["unknown", "busy", "idle"])
def test_auto_threads_take_every_core_only_on_an_idle_machine(files, monkeypatch, idle, threads):
    from instret.lm.local import engine
    from instret.lm.local.lm import on_idle_cores
    from instret.lm.spec import ModelSpec

    sent = params_sent(monkeypatch)
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(engine, "_idle_cores", lambda seconds: idle)
    spec = on_idle_cores(ModelSpec(local(files["model"])))
    assert spec.extra == {"n_threads": "auto"}
    assert on_idle_cores(ModelSpec(local(files["model"]), extra={"n_threads": 1})).extra == {"n_threads": 1}
    assert on_idle_cores(ModelSpec("ollama_chat/qwen2.5:3b")).extra == {}
    with pytest.raises(LocalEngineError):
        local_server(spec.model, n_threads=spec.extra["n_threads"])
    assert (sent[0].cpuparams.n_threads, sent[0].cpuparams_batch.n_threads) == (threads, threads)
