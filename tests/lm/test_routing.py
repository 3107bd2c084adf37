"""Several servers of one model behind one LM (litellm's Router), and retry waits set by a spec.

Two `tests/helpers/loopback.py` servers stand in for two machines serving the same model; every call
crosses real HTTP.
"""

from __future__ import annotations

import types

import pytest
from helpers.loopback import LoopbackServer, answers

import dspy
from instret.lm.models import ModelSpec, make_lm
from instret.lm.servers.routing import EndpointEngine

CHAT = {"ollama_chat": "/api/chat", "openai": "/v1/chat/completions"}
SUFFIX = {"ollama_chat": "", "openai": "/v1"}


@pytest.fixture
def pair():
    with LoopbackServer(models=["m"], responder=answers(answer=42.0)) as a, \
            LoopbackServer(models=["m"], responder=answers(answer=42.0)) as b:
        yield a, b


def ask(lm, count: int) -> list:
    with dspy.context(lm=lm):
        return [dspy.Predict("question -> answer: float")(question=f"question {i}").answer for i in range(count)]


def two_server_lm(a, b, backend: str, **fields):
    urls = [a.url + SUFFIX[backend], b.url + SUFFIX[backend]]
    return make_lm(ModelSpec(f"{backend}/m", api_base=",".join(urls), extra={"cache": False}, **fields))


@pytest.mark.parametrize("backend", CHAT)
def test_requests_spread_over_both_servers(pair, backend):
    a, b = pair
    lm = two_server_lm(a, b, backend, num_ctx=4096, max_tokens=64)
    assert isinstance(lm.engine, EndpointEngine) and len(lm.engine.servers) == 2

    assert ask(lm, 30) == [42.0] * 30
    served = a.hits[CHAT[backend]], b.hits[CHAT[backend]]
    assert sum(served) == 30 and min(served) >= 5  # simple shuffle: both take a share
    for request in a.requests_for(CHAT[backend]) + b.requests_for(CHAT[backend]):
        if backend == "ollama_chat":
            assert request.options == {"num_ctx": 4096, "num_predict": 64}
        else:
            assert request.body["max_tokens"] == 64 and "num_ctx" not in request.body
            assert request.headers["Authorization"] == "Bearer not-needed"


@pytest.mark.parametrize("backend", CHAT)
def test_a_stopped_server_leaves_the_other_serving_everything(pair, backend):
    a, b = pair
    lm = two_server_lm(a, b, backend, num_retries=0)  # no DSPy retry: the Router's failover alone
    assert ask(lm, 4) == [42.0] * 4
    b.faults = lambda record: "refuse"  # the keep-alive connections a dead server leaves get a reset
    b.stop()
    a.reset()

    assert ask(lm, 20) == [42.0] * 20
    assert a.hits[CHAT[backend]] == 20


def test_a_failing_server_is_cooled_down(pair):
    a, b = pair
    b.faults = lambda record: "http500"
    lm = two_server_lm(a, b, "ollama_chat", num_retries=0)

    assert ask(lm, 30) == [42.0] * 30
    assert a.hits["/api/chat"] == 30
    assert b.hits["/api/chat"] < 10  # after a few 500s the Router stops sending it anything


def test_list_of_endpoints_and_what_is_recorded(pair):
    a, b = pair
    spec = ModelSpec("openai/m", api_base=[a.url + "/v1/", b.url + "/v1"], api_key="sk-routing-test",
                     extra={"cache": False, "extra_headers": {"Authorization": "Bearer sk-routing-test"}})
    assert spec.endpoints == [a.url + "/v1", b.url + "/v1"] and spec.resolved_api_base == a.url + "/v1"
    assert spec.public_dict()["extra"] == {"cache": False} and "sk-routing-test" not in repr(spec)
    lm = make_lm(spec)
    assert "sk-routing-test" not in repr(lm.dump_state())
    assert ask(lm, 6) == [42.0] * 6
    seen = a.requests_for("/v1/chat/completions") + b.requests_for("/v1/chat/completions")
    assert {r.headers["Authorization"] for r in seen} == {"Bearer sk-routing-test"}


def test_spec_backoff_doubles_between_dspy_retries(pair, monkeypatch):
    import dspy.clients.execution as execution

    waits = []  # the waits DSPy's retry loop asks for, recorded rather than timed (timing flakes under load)
    monkeypatch.setattr(execution, "time", types.SimpleNamespace(sleep=waits.append))
    a, _ = pair
    a.faults = ["http500", "http500", "http500"]
    lm = make_lm(ModelSpec("ollama_chat/m", api_base=a.url, num_retries=3, retry_backoff=0.1, extra={"cache": False}))
    assert ask(lm, 1) == [42.0]
    assert a.hits["/api/chat"] == 4
    assert waits == pytest.approx([0.1, 0.2, 0.4])  # not DSPy's 1 + 2 + 4 s


def test_retry_waits_are_capped(monkeypatch):
    from dspy import lm15

    monkeypatch.setattr("instret.lm.servers.routing.MAX_RETRY_WAIT", 2.0)
    engine = EndpointEngine([{"model": "ollama_chat/m"}], retry_backoff=0.5)
    request, waits = object(), []
    for _ in range(5):
        error = lm15.ServerError("boom", status=500)
        engine._set_retry_wait(error, request)
        waits.append(error.retry_after)
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    hinted = lm15.RateLimitError("slow down", status=429, retry_after=3600.0)
    engine._set_retry_wait(hinted, object())
    assert hinted.retry_after == 2.0  # a server's Retry-After is honoured, but bounded
