"""Answers DSPy's cache serves: counted at what they cost when produced, marked, never averaged in as free.

The suite disables DSPy's cache (conftest); these tests turn the real one on, in a temporary
folder, and put the suite's back afterwards.
"""

from __future__ import annotations

import json

import pytest
from helpers.loopback import LoopbackServer, answers, chat_reply

import dspy
from instret.data.questions import Question
from instret.evaluation.report import format_table, summarize
from instret.evaluation.run import RESULTS, evaluate
from instret.lm.models import ModelSpec, make_lm
from instret.lm.recovery import answer_with_recovery
from instret.programs import ChainOfThoughtQA

BACKENDS = {"ollama_chat": ("", "/api/chat"), "openai": ("/v1", "/v1/chat/completions")}
QUESTIONS = [Question(text=f"Item {i}: what is {i} + 7?", answer=str(i + 7), source="cache", line=i) for i in range(4)]


@pytest.fixture
def dspy_cache(tmp_path):
    """DSPy's real memory + disk cache in a temporary folder; the suite's (none) is put back after."""
    previous = dspy.cache
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(tmp_path / "dspy-cache"))
    yield dspy.cache
    with dspy._cache_lock:
        dspy.cache = previous


def item_answer(request) -> float:
    for question in QUESTIONS:
        if question.text in request.user:
            return float(question.answer)
    return 0.0


@pytest.fixture
def server():
    with LoopbackServer(models=["m"], responder=answers(answer=item_answer)) as srv:
        yield srv


def student(server, backend: str):
    suffix, _ = BACKENDS[backend]
    return make_lm(ModelSpec(f"{backend}/m", api_base=server.url + suffix, num_retries=0))  # DSPy's cache on


def run(server, backend, out_dir):
    return evaluate(QUESTIONS, methods={"cot": ChainOfThoughtQA("numeric")}, students={"m": student(server, backend)},
                    kind="numeric", out_dir=out_dir, threads=2, progress=False)


def rows(out_dir) -> dict[str, dict]:
    return {r["question_id"]: r for r in map(json.loads, (out_dir / RESULTS).read_text().splitlines())}


@pytest.mark.parametrize("backend", BACKENDS)
def test_cached_rows_count_what_they_cost_when_produced(dspy_cache, server, tmp_path, backend):
    path = BACKENDS[backend][1]
    first = run(server, backend, tmp_path / "first")
    asked = server.hits[path]
    assert asked == len(QUESTIONS)
    produced = rows(tmp_path / "first")
    assert all(not r["cached"] and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in produced.values())
    assert first.summary[0]["cached"] == 0 and first.summary[0]["timed"] == len(QUESTIONS)

    # A new output folder: every answer comes from DSPy's cache, in memory and then (a new
    # process, as far as the cache knows) from disk alone.
    for name in ("from-memory", "from-disk"):
        if name == "from-disk":
            dspy_cache.reset_memory_cache()
        report = run(server, backend, tmp_path / name)
        assert server.hits[path] == asked  # nothing reached the model
        again = rows(tmp_path / name)
        for qid, row in again.items():
            assert row["cached"] and row["cached_calls"] == 1
            assert (row["prompt_tokens"], row["completion_tokens"]) == (produced[qid]["prompt_tokens"],
                                                                        produced[qid]["completion_tokens"])
        (row,) = report.summary
        assert row["cached"] == row["n"] == len(QUESTIONS)
        assert row["mean_prompt_tokens"] == first.summary[0]["mean_prompt_tokens"] > 0
        assert row["mean_completion_tokens"] == first.summary[0]["mean_completion_tokens"] > 0
        assert row["timed"] == 0 and row["mean_latency_s"] is None  # a cache's latency is not the model's
        table = format_table(report.summary)
        assert "4 of 4 answers came from DSPy's cache" in table and "cached" in table.splitlines()[1]


def test_latency_is_averaged_over_produced_rows_and_tokens_over_all():
    def record(qid, latency, cached):
        return {"method": "cot", "student": "m", "question_id": qid, "correct": True, "parse_failed": False,
                "recovery": "direct", "prompt_tokens": 100, "completion_tokens": 20, "latency_s": latency,
                "cached": cached}

    (row,) = summarize([record("a", 1.0, False), record("b", 3.0, False), record("c", 0.001, True),
                        record("d", 0.002, True)])
    assert (row["n"], row["cached"], row["timed"]) == (4, 2, 2)
    assert row["mean_latency_s"] == 2.0
    assert (row["mean_prompt_tokens"], row["mean_completion_tokens"]) == (100, 20)  # cached rows are not free


def test_a_fresh_sample_bypasses_the_cache_now_and_on_a_rerun(dspy_cache):
    """The first reply never parses; the retry must reach the server every time, never the cache."""
    def responder(request):
        if request.options.get("temperature") is None:
            return "I would rather talk about the weather."
        return chat_reply({"reasoning": "Add them.", "answer": 9})

    with LoopbackServer(models=["m"], responder=responder) as srv:
        lm = student(srv, "openai")
        for run_number in (1, 2):
            with dspy.context(lm=lm):
                attempt = answer_with_recovery(ChainOfThoughtQA("numeric"), "numeric", "What is 2 + 7?")
            assert (attempt.path, attempt.answer) == ("fresh_sample", "9")
            assert [call.cached for call in attempt.calls] == [run_number == 2, False]
            assert attempt.replies[0].raw == "I would rather talk about the weather."
        requests = srv.requests_for("/v1/chat/completions")
        assert len(requests) == 3  # the bad first reply once (then cached), a fresh sample on each run
        assert [r.body.get("temperature") for r in requests] == [None, 0.7, 0.7]


class AskedTwice(dspy.Module):
    """Two identical calls in one answer, as a cascade's first_error stage repeats its cot stage's."""

    def __init__(self):
        super().__init__()
        self.first, self.again = ChainOfThoughtQA("numeric"), ChainOfThoughtQA("numeric")

    def forward(self, question, options=None):
        self.first(question, options)
        return self.again(question, options)


def test_an_answer_only_some_of_whose_calls_the_cache_served_keeps_its_wall_time(server, dspy_cache, tmp_path):
    report = evaluate(QUESTIONS, methods={"twice": AskedTwice()}, students={"m": student(server, "openai")},
                      kind="numeric", out_dir=tmp_path / "run", threads=1, progress=False)
    for row in rows(tmp_path / "run").values():
        assert (row["lm_calls"], row["cached_calls"], row["cached"]) == (2, 1, False)
    assert report.summary[0]["timed"] == len(QUESTIONS) and report.summary[0]["cached"] == 0
