"""Small-model outputs that break the format, answered over real HTTP by `tests/helpers/loopback.py`.

Each question gets one misbehaviour from the responder; the evaluation must record the path
that recovered its answer (`instret.lm.recovery`), count the paths per model in the summary, and
finish the batch whatever the outputs were.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from helpers.loopback import LoopbackServer, chat_reply

import dspy
from instret.programs import ChainOfThoughtQA
from instret.evaluation.run import FAILURES, RESULTS, evaluate
from instret.lm.models import ModelSpec, make_lm
from instret.data.questions import Question
from instret.lm.recovery import RECOVERY_PATHS, answer_with_recovery


def asks_json(request) -> bool:
    """DSPy's JSONAdapter fallback (structured output or its JSON prompt), not the ChatAdapter."""
    return request.wants_json or request.json_schema is not None or "Outputs will be a JSON object" in request.system


def as_json(answer) -> str:
    return json.dumps({"reasoning": "Add the two numbers.", "answer": answer})


def well_formed(answer) -> str:
    return chat_reply({"reasoning": "Add the two numbers.", "answer": answer})


def sampled(request) -> bool:
    """A fresh sample: instret's retry sets a temperature; the first request leaves it unset."""
    return request.options.get("temperature") is not None


# name: (what the model sends for a question whose answer is `a`, the path expected, LM calls)
BEHAVIOURS = {
    "well_formed": (lambda request, a: as_json(a) if asks_json(request) else well_formed(a), "direct", 1),
    "prose_around_fields": (lambda request, a: f"Sure! Let me help.\n\n{well_formed(a)}\n\nHope this helps!",
                            "direct", 1),
    "answer_only_in_prose": (lambda request, a: f"Adding them up gives {a}, so the answer is {a}.",
                             "lenient_extract", 1),
    "json_instead_of_fields": (lambda request, a: as_json(a), "lenient_extract", 1),
    "fixed_by_a_fresh_sample": (lambda request, a: well_formed(a) if sampled(request)
                                else "I would rather talk about the weather.", "fresh_sample", 2),
    "missing_answer_field": (lambda request, a: as_json(a) if asks_json(request)
                             else chat_reply({"reasoning": "Add the two numbers."}), "json_adapter", 3),
    "json_in_answer_field": (lambda request, a: as_json(a) if asks_json(request)
                             else well_formed(json.dumps({"value": "some"})), "json_adapter", 3),
    "garbage": (lambda request, a: "asdf qwerty zxcv !!", "failed", 3),
    "empty": (lambda request, a: "", "failed", 3),
}
NAMES = list(BEHAVIOURS)
PER_BEHAVIOUR = 2
QUESTIONS = [Question(text=f"Case {name} #{k}: what is {i} + {k}?", answer=str(i + k), source="recovery", line=i)
             for i, name in enumerate(NAMES) for k in range(PER_BEHAVIOUR)]


def misbehaving(request) -> str:
    name, a, b = re.search(r"Case (\w+) #\d+: what is (\d+) \+ (\d+)\?", request.user).groups()
    return BEHAVIOURS[name][0](request, int(a) + int(b))


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(models=["m"], responder=misbehaving) as srv:
        yield srv


def student(server, backend: str):
    suffix = "/v1" if backend == "openai" else ""
    return make_lm(ModelSpec(f"{backend}/m", api_base=server.url + suffix, num_retries=0, extra={"cache": False}))


@pytest.mark.parametrize("backend", ["ollama_chat", "openai"])
@pytest.mark.parametrize("name", NAMES)
def test_each_misbehaviour_takes_its_recovery_path(server, backend, name):
    _, path, calls = BEHAVIOURS[name]
    question = next(q for q in QUESTIONS if f"Case {name} #" in q.text)
    with dspy.context(lm=student(server, backend)):
        attempt = answer_with_recovery(ChainOfThoughtQA("numeric"), "numeric", question.text)
    assert (attempt.path, attempt.lm_calls) == (path, calls)
    assert attempt.answer == (None if path == "failed" else question.answer)


@pytest.fixture(scope="module")
def batch(server, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("recovery")
    students = {"ollama": student(server, "ollama_chat"), "openai-compatible": student(server, "openai")}
    report = evaluate(QUESTIONS, methods={"cot": ChainOfThoughtQA("numeric")}, students=students, kind="numeric", out_dir=out_dir,
                      threads=4, progress=False)
    return out_dir, report


def test_bad_outputs_never_stop_the_batch(batch):
    out_dir, report = batch
    assert report.answered_now == 2 * len(QUESTIONS) and report.failures == {}
    assert not (out_dir / FAILURES).exists() or not (out_dir / FAILURES).read_text().strip()
    for record in map(json.loads, (out_dir / RESULTS).read_text().splitlines()):
        name = re.search(r"Case (\w+) #", record["inputs"]["question"]).group(1)
        _, path, calls = BEHAVIOURS[name]
        assert (record["recovery"], record["lm_calls"]) == (path, calls), name
        assert record["correct"] == (path != "failed") and record["parse_failed"] == (path == "failed")
        if path == "failed":
            assert record["answer"] is None and "raw" in record["outputs"]  # what the model said is kept


def test_summary_counts_each_path_per_model(batch):
    out_dir, report = batch
    expected = Counter({path: 0 for path in RECOVERY_PATHS if path != "truncated"})
    for _, path, _ in BEHAVIOURS.values():
        expected[path] += PER_BEHAVIOUR
    rows = json.loads((out_dir / "summary.json").read_text())
    assert [row["student"] for row in rows] == ["ollama", "openai-compatible"]
    for row in rows:
        assert {path: row.get(f"recovered_{path}", 0) for path in expected} == dict(expected)
        assert row["n"] == len(QUESTIONS)
        assert row["parse_failures"] == expected["failed"]
        assert row["correct"] == len(QUESTIONS) - expected["failed"]
    header = (out_dir / "summary.csv").read_text().splitlines()[0]
    assert all(f"recovered_{path}" in header for path in expected)
