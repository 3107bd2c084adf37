"""The real HTTP paths (DSPy → litellm → Ollama / OpenAI-compatible APIs) against `tests/helpers/loopback.py`.

No mocks between DSPy and the socket: every model call below crosses a real HTTP connection to
a server on 127.0.0.1. `cache=False` keeps DSPy's disk cache from hiding requests and
`num_retries=0` keeps the fault tests fast; both reach `dspy.LM` through `ModelSpec.extra`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Literal

import pytest


import instret._env  # noqa: E402,F401  (before litellm: no network at import)
import dspy  # noqa: E402
import pydantic  # noqa: E402
from dspy.utils import exceptions as dspy_errors  # noqa: E402
from helpers.loopback import LoopbackServer, answers, chat_reply  # noqa: E402

from instret.evaluation.run import failure_kind
from instret.lm.models import ModelSpec, make_lm  # noqa: E402

FAST = {"num_retries": 0, "cache": False}
BACKENDS = ["ollama_chat", "openai"]
CHAT_PATH = {"ollama_chat": "/api/chat", "openai": "/v1/chat/completions"}


@pytest.fixture
def server():
    with LoopbackServer(models=["m", "embedder"], hang=10) as srv:
        yield srv


def lm_for(server: LoopbackServer, backend: str, **overrides):
    api_base = server.url if backend == "ollama_chat" else server.url + "/v1"
    spec = ModelSpec(model=f"{backend}/m", api_base=api_base, extra=dict(FAST))
    return make_lm(spec, **overrides)


def predict(lm, signature, **inputs):
    with dspy.context(lm=lm):
        return dspy.Predict(signature)(**inputs)


# ---------------------------------------------------------------- chat through DSPy


def test_ollama_chat_returns_scripted_answer_and_sends_num_ctx(server):
    seen = []

    def responder(request):
        seen.append(request)
        return chat_reply({"answer": "Paris"})

    server.responder = responder
    lm = lm_for(server, "ollama_chat", num_ctx=4096)
    assert lm.cache is False and lm.num_retries == 0  # ModelSpec.extra reached dspy.LM, not the request

    assert predict(lm, "question -> answer", question="Capital of France?").answer == "Paris"

    (chat,) = server.requests_for("/api/chat")
    assert chat.model == "m"
    assert chat.options["num_ctx"] == 4096
    assert chat.body["stream"] is False
    assert "num_retries" not in json.dumps(chat.body) and "cache" not in chat.body
    assert seen[0].options == {"num_ctx": 4096}
    assert "Your output fields are:" in seen[0].system
    assert "Capital of France?" in seen[0].user


def test_openai_compatible_returns_scripted_answer(server):
    server.responder = answers(answer="Paris")
    lm = lm_for(server, "openai", temperature=0.25, max_tokens=300)

    assert predict(lm, "question -> answer", question="Capital of France?").answer == "Paris"

    (chat,) = server.requests_for("/v1/chat/completions")
    assert chat.model == "m"
    assert chat.body["temperature"] == 0.25
    assert 300 in (chat.body.get("max_tokens"), chat.body.get("max_completion_tokens"))
    assert "num_ctx" not in chat.body
    assert chat.headers.get("Authorization") == "Bearer not-needed"  # make_lm's placeholder key
    assert server.hits["/api/chat"] == 0


class Citation(pydantic.BaseModel):
    source: str
    page: int
    quotes: list[str]


class Report(pydantic.BaseModel):
    title: str
    score: float
    verdict: Literal["pass", "fail"]
    citations: list[Citation]
    note: str | None = None


class Typed(dspy.Signature):
    """Answer with typed fields."""

    question: str = dspy.InputField()
    count: int = dspy.OutputField()
    ratio: float = dspy.OutputField()
    label: Literal["yes", "no", "maybe"] = dspy.OutputField()
    ok: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    report: Report = dspy.OutputField()


@pytest.mark.parametrize("backend", BACKENDS)
def test_typed_and_pydantic_outputs_parse(server, backend):
    lm = lm_for(server, backend)
    pred = predict(lm, Typed, question="How many?")

    assert isinstance(pred.count, int) and isinstance(pred.ratio, float) and isinstance(pred.ok, bool)
    assert pred.label in ("yes", "no", "maybe")
    assert len(pred.tags) == 3 and all(isinstance(t, str) and t for t in pred.tags)
    report = pred.report
    assert isinstance(report, Report) and report.title and report.verdict in ("pass", "fail")
    assert len(report.citations) == 3
    assert all(c.source and isinstance(c.page, int) and len(c.quotes) == 3 for c in report.citations)
    assert server.hits[CHAT_PATH[backend]] == 1  # parsed by ChatAdapter, no JSON fallback

    again = predict(lm, Typed, question="How many?")
    assert again.toDict() == pred.toDict()  # deterministic per input


def test_streaming_chat_through_dspy(server):
    """dspy.streamify makes litellm send stream=true; NDJSON (Ollama) and SSE (OpenAI) both assemble."""
    import asyncio

    server.responder = answers(answer="Streamed answer", n=7)

    async def run(lm):
        program = dspy.streamify(dspy.Predict("question -> answer, n: int"))
        with dspy.context(lm=lm):
            return [chunk async for chunk in program(question="q")][-1]

    for backend in BACKENDS:
        result = asyncio.run(run(lm_for(server, backend)))
        assert (result.answer, result.n) == ("Streamed answer", 7)
        assert server.requests_for(CHAT_PATH[backend])[-1].body["stream"] is True


def test_openai_client_streams_sse_with_usage(server):
    import openai

    server.responder = "plain text reply"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "plain text reply"
    assert chunks[-1].usage.completion_tokens > 0
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "plain text reply" and reply.usage.total_tokens > 0
    assert [m.id for m in client.models.list()] == ["embedder", "m"]


# ---------------------------------------------------------------- the ollama client and embeddings


def test_ollama_client_list_show_pull(server):
    import ollama

    client = ollama.Client(host=server.url)
    assert {m.model for m in client.list().models} == {"m:latest", "embedder:latest"}

    shown = client.show("m")
    assert shown.modelinfo["llama.context_length"] == server.context_length
    assert "temperature" in shown.parameters

    with pytest.raises(ollama.ResponseError) as missing:
        client.show("absent")
    assert missing.value.status_code == 404 and "absent" in str(missing.value)

    progress = list(client.pull("fresh", stream=True))
    assert progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    assert "fresh:latest" in {m.model for m in client.list().models}


def test_embeddings_ollama_and_openai(server):
    import litellm
    import openai

    texts = ["alpha", "beta"]
    native = litellm.embedding(model="ollama/embedder", api_base=server.url, input=texts)
    compat = litellm.embedding(model="openai/embedder", api_base=server.url + "/v1", api_key="x", input=texts)

    vectors = [d["embedding"] for d in native.data]
    assert [len(v) for v in vectors] == [server.dim, server.dim]
    assert all(abs(math.fsum(x * x for x in v) - 1) < 1e-9 for v in vectors)
    assert vectors[0] != vectors[1]
    assert [d["embedding"] for d in compat.data] == vectors  # same text, same vector, either API
    assert compat.usage.prompt_tokens > 0
    assert server.requests_for("/api/embed")[0].body["input"] == texts

    # The OpenAI client asks for base64 unless told otherwise.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    decoded = client.embeddings.create(model="embedder", input="alpha").data[0].embedding
    assert max(abs(a - b) for a, b in zip(decoded, vectors[0])) < 1e-6
    assert server.requests_for("/v1/embeddings")[-1].body["encoding_format"] == "base64"


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("http500", dspy_errors.LMServerError),
        ("http429", dspy_errors.LMRateLimitError),
        # litellm raises a timeout as such; DSPy's native engine (OpenAI-compatible servers) as a
        # transport error caused by a TimeoutError, which instret still counts as a timeout.
        ("timeout", (dspy_errors.LMTimeoutError, dspy_errors.LMTransportError)),
        ("close", dspy_errors.LMError),
        ("refuse", dspy_errors.LMError),
        ("truncated", dspy_errors.LMError),
    ],
)
def test_http_faults_surface_as_exceptions(server, backend, fault, error):
    server.faults = [fault]
    lm = lm_for(server, backend, timeout=0.5)
    with pytest.raises(error) as raised:
        predict(lm, "question -> answer", question="q")
    if fault == "timeout":
        assert failure_kind(raised.value) == "timeout"
    assert server.hits[CHAT_PATH[backend]] == 1  # num_retries=0: no second attempt
    assert predict(lm, "question -> answer", question="q").answer  # the schedule is spent


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_model_is_404(server, backend):
    lm = lm_for(server, backend)
    server.models.discard("m")
    with pytest.raises(dspy_errors.LMInvalidRequestError, match="model 'm' not found"):
        predict(lm, "question -> answer", question="q")
    server.models.add("m")
    assert predict(lm, "question -> answer", question="q").answer


@pytest.mark.parametrize("fault", ["malformed", "empty"])
def test_bad_content_falls_back_to_json_adapter_then_fails(server, fault):
    lm = lm_for(server, "ollama_chat")
    server.faults = [fault]  # ChatAdapter fails; DSPy retries once with JSONAdapter, which parses
    assert predict(lm, "question -> answer", question="q").answer
    assert server.hits["/api/chat"] == 2
    server.faults = [fault, fault]
    with pytest.raises(dspy_errors.AdapterParseError):
        predict(lm, "question -> answer", question="q")


def test_subprocess_mode_ready_and_sigterm():
    script = Path(__file__).resolve().parents[1] / "helpers" / "loopback.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--models", "a,b"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "READY"
        with urllib.request.urlopen(line[1] + "/api/tags", timeout=5) as response:
            assert [m["name"] for m in json.load(response)["models"]] == ["a:latest", "b:latest"]
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
