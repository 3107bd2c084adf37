"""Faults during an evaluation, over real HTTP to `tests/helpers/loopback.py`: cured, counted, resumed.

Every answer crosses DSPy → litellm → a socket. Transient faults must be cured by DSPy's
bounded retries; persistent ones must end as failed items counted by kind while the run goes
on; a server that dies mid-run and comes back must lose nothing when the run is repeated.
"""

from __future__ import annotations

import json
import re
import threading
import time
import types

import pytest
from helpers.loopback import LoopbackServer, answers

import dspy
from instret.programs import ChainOfThoughtQA
from instret.evaluation.run import FAILURES, RESULTS, evaluate
from instret.lm.models import ModelSpec, make_lm
from instret.data.questions import Question

BACKENDS = {"ollama_chat": ("", "/api/chat"), "openai": ("/v1", "/v1/chat/completions")}
N = 20


QUESTIONS = [Question(text=f"Item {i:02d}: what is {i} + 7?", answer=str(i + 7), source="faults", line=i)
             for i in range(N)]


def item_of(text: str) -> int | None:
    match = re.search(r"Item (\d\d)", text)
    return int(match.group(1)) if match else None


def correct_answer(request) -> float:
    return float(item_of(request.user) + 7)


class FaultPlan:
    """`{item: kind}` injected on the first `times` requests about that item (None: on every one)."""

    def __init__(self, kinds: dict[int, str], times: int | None = 1):
        self.kinds, self.times = kinds, times
        self.asked: dict[int, int] = {}

    def __call__(self, record):
        item = item_of(json.dumps(record.body))
        self.asked[item] = self.asked.get(item, 0) + 1
        if item in self.kinds and (self.times is None or self.asked[item] <= self.times):
            return self.kinds[item]
        return None


def student(server: LoopbackServer, backend: str, **spec_fields):
    suffix, _ = BACKENDS[backend]
    return make_lm(ModelSpec(f"{backend}/m", api_base=server.url + suffix, extra={"cache": False}, **spec_fields))


def run(server, backend, out_dir, threads=4, **spec_fields):
    return evaluate(QUESTIONS, methods={"cot": ChainOfThoughtQA("numeric")}, students={"m": student(server, backend, **spec_fields)},
                    kind="numeric", out_dir=out_dir, threads=threads, progress=False)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def server():
    with LoopbackServer(models=["m"], responder=answers(answer=correct_answer), hang=3) as srv:
        yield srv


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("retry_backoff", [None, 0.05], ids=["dspy-backoff", "spec-backoff"])
def test_transient_faults_are_cured_by_retries(server, tmp_path, backend, retry_backoff, monkeypatch):
    """One 500, one 429 and one timeout, each on a first attempt only: every item ends answered."""
    import dspy.clients.execution as execution

    waits = []  # the waits DSPy's retry loop asks for, recorded rather than timed (timing flakes under load)
    monkeypatch.setattr(execution, "time", types.SimpleNamespace(sleep=waits.append))
    server.faults = FaultPlan({3: "http500", 5: "http429", 7: "timeout"})
    report = run(server, backend, tmp_path, timeout=1.0, num_retries=2, retry_backoff=retry_backoff)

    assert report.failures == {} and not lines(tmp_path / FAILURES)
    assert report.answered_now == N
    assert server.hits[BACKENDS[backend][1]] == N + 3  # exactly one retry per injected fault
    records = lines(tmp_path / RESULTS)
    assert len(records) == N and all(r["correct"] and r["recovery"] == "direct" for r in records)
    (row,) = report.summary
    assert (row["n"], row["correct"]) == (N, N)
    assert len(waits) == 3  # one wait per injected fault; openai's 429 carries Retry-After: 0, honoured
    if retry_backoff is None:
        assert max(waits) == 1  # DSPy's own first backoff
    else:
        assert max(waits) == 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_persistent_faults_fail_their_items_counted_by_kind(server, tmp_path, backend):
    kinds = {0: "http500", 1: "http503", 2: "http429", 3: "timeout", 4: "refuse", 5: "close", 6: "truncated",
             7: "malformed", 8: "empty"}
    server.faults = FaultPlan(kinds, times=None)
    report = run(server, backend, tmp_path, timeout=0.5, num_retries=1, retry_backoff=0.01)

    expected = {"server_error": 2, "rate_limit": 1, "timeout": 1, "connection": 2, "bad_response": 1}
    assert report.failures == expected
    index = {q.id: i for i, q in enumerate(QUESTIONS)}
    failed = {index[f["question_id"]]: f["failure_kind"] for f in lines(tmp_path / FAILURES)}
    assert failed == {0: "server_error", 1: "server_error", 2: "rate_limit", 3: "timeout", 4: "connection",
                      5: "connection", 6: "bad_response"}
    assert all(server.faults.asked[item] == 2 for item in failed)  # bounded: num_retries=1 → two attempts

    # Answers with no fields are not LM failures: they are recorded, unparsed, after the recovery
    # paths (extractor, a fresh sample, the JSON adapter: three calls) found nothing.
    recorded = {index[r["question_id"]]: r for r in lines(tmp_path / RESULTS)}
    assert all(recorded[item]["recovery"] == "failed" and server.faults.asked[item] == 3 for item in (7, 8))

    # The run went on: every other item was answered and scored, and the summary counts the rest.
    assert report.answered_now == len(recorded) == N - len(failed)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary[0]["n"], summary[0]["correct"], summary[0]["parse_failures"]) == (N - 7, N - 9, 2)
    assert summary[-1] == {"method": "(failed items)", "student": "", **{f"failed_{k}": v for k, v in expected.items()}}
    assert "failed_server_error" in (tmp_path / "summary.csv").read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_dying_mid_run_then_rerun_loses_nothing(tmp_path, backend):
    chat = BACKENDS[backend][1]
    first = LoopbackServer(models=["m"], responder=answers(answer=correct_answer), latency=0.02).start()
    port = first.port

    def kill_after_eight_answers():
        while first.hits[chat] < 8:
            time.sleep(0.005)
        # A dead server also resets the keep-alive connections clients still hold; a stopped
        # ThreadingHTTPServer would go on serving those, so they get a reset first.
        first.faults = lambda record: "refuse"
        first.stop()

    killer = threading.Thread(target=kill_after_eight_answers)
    killer.start()
    try:
        report = run(first, backend, tmp_path, threads=2, timeout=2.0, num_retries=1, retry_backoff=0.01)
    finally:
        killer.join(timeout=10)
        first.stop()
    answered = {r["question_id"] for r in lines(tmp_path / RESULTS)}
    failed = {f["question_id"] for f in lines(tmp_path / FAILURES)}
    assert set(report.failures) == {"connection"} and report.failures["connection"] == len(failed) > 0
    assert len(answered) == report.answered_now >= 8 and len(failed) >= N // 4 and not answered & failed
    assert len(answered) + len(failed) == N  # every item is either recorded as answered or as failed

    with LoopbackServer(port=port, models=["m"], responder=answers(answer=correct_answer)) as second:
        again = run(second, backend, tmp_path, threads=2, timeout=2.0, num_retries=1, retry_backoff=0.01)
        asked = [item_of(json.dumps(r.body)) for r in second.requests_for(chat)]

    assert sorted(asked) == sorted(QUESTIONS.index(q) for q in QUESTIONS if q.id in failed)  # only those
    assert (again.answered_before, again.answered_now, again.failures) == (len(answered), len(failed), {})
    records = lines(tmp_path / RESULTS)
    assert len(records) == len({r["key"] for r in records}) == N  # nothing lost, nothing written twice
    assert again.summary[0]["n"] == again.summary[0]["correct"] == N
