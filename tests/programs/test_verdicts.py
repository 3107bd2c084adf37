"""The teacher's verdicts: read from log-probabilities as documented, numbers compared as numbers,
a backend without log-probabilities refused with the alternative named, every call counted."""

from __future__ import annotations

import math

import pytest
from helpers.intervention import FAST, field, reply
from helpers.loopback import LoopbackServer
from helpers.scripted import scripted_lm
from instret.programs.verdicts import (
    VERDICTS,
    FinalAnswer,
    Recompute,
    Score09,
    Verdict,
    YesNo,
    digit_expectation,
    hide_result,
    make_verdict,
    same_number,
    yes_probability,
)

from instret.lm.calls import CallLog
from instret.lm.models import ModelSpec, make_lm
from instret.lm.steps import LogprobsUnavailable

QUESTION = "Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens are left?"


def entry(token: str, p: float, top: dict[str, float] | None = None) -> dict:
    top = top or {token: p}
    return {"token": token, "logprob": math.log(p), "top": [{"token": t, "logprob": math.log(q)} for t, q in top.items()]}


def test_yes_no_is_read_from_the_verdict_tokens_alternatives():
    header = [entry("[[", 1.0), entry(" ##", 1.0), entry(" correct", 1.0), entry("\n", 1.0)]
    assert yes_probability(header + [entry("yes", 0.6, {"yes": 0.6, " Yes": 0.2, "no": 0.2})]) == pytest.approx(0.8)
    assert yes_probability(header + [entry("no", 0.7, {"no": 0.7, "yes": 0.1, "maybe": 0.2})]) == pytest.approx(0.125)
    assert yes_probability(header) is None  # no verdict token: unjudged, not 0


def test_score_is_the_expected_digit_over_nine():
    assert digit_expectation([entry("7", 0.5, {"7": 0.5, "9": 0.25, "x": 0.25})]) == pytest.approx((7 * 0.5 + 9 * 0.25) / 0.75 / 9)
    assert digit_expectation([entry("9", 1.0)]) == pytest.approx(1.0)
    assert digit_expectation([entry("none", 1.0)]) is None


def test_numbers_are_compared_as_numbers():
    assert same_number("3,000", 3000.0) and same_number("31", 31) and not same_number(7, 8)
    assert not same_number("many", 3)
    assert hide_result("Step 2: He gives away 5, so 36 - 5 = 31 pens.") == ("Step 2: He gives away 5, so 36 - 5 = ? pens.", 31)
    assert hide_result("Step 1: Read the problem.")[1] is None


def test_every_design_is_a_verdict_and_named():
    lm, _ = scripted_lm(lambda system, user: "")
    assert set(VERDICTS) == {"yes_no", "score", "recompute", "final_answer"}
    assert all(isinstance(make_verdict(name, lm), Verdict) for name in VERDICTS)
    with pytest.raises(ValueError, match="unknown verdict 'vibes': choose from yes_no"):
        make_verdict("vibes", lm)


def judge(request) -> str:
    """A teacher that says yes to a step computing 36 - 5 = 31, no otherwise; rates 8 / 2; recomputes 31."""
    user = request.body["messages"][-1]["content"]
    if "`correct`" in request.system:
        return reply(correct="yes" if "= 31" in (field(user, "step") or field(user, "solution") or "") else "no")
    if "`score`" in request.system:
        return reply(score="8" if "= 31" in (field(user, "solution") or "") else "2")
    if "`result`" in request.system:
        return reply(result="31")
    return reply(answer="31")


@pytest.fixture
def teacher():
    with LoopbackServer(models=("teacher",), responder=judge, logprob=lambda token, request: math.log(0.9)) as server:
        yield make_lm(ModelSpec("openai/teacher", api_base=server.url + "/v1", extra=FAST)), server


def test_yes_no_and_score_read_log_probabilities_from_the_server(teacher):
    lm, server = teacher
    right, wrong = "Step 1: 36 - 5 = 31.", "Step 1: 36 - 5 = 30."
    verdict = YesNo(lm)
    assert verdict.solution(QUESTION, right) == 1.0 and verdict.solution(QUESTION, wrong) == 0.0
    assert verdict.step(QUESTION, ["Step 1: 3 * 12 = 36 pens."], "Step 2: 36 - 5 = 31.") == 1.0
    assert Score09(lm).solution(QUESTION, right) == pytest.approx(8 / 9)
    asked = [r.body for r in server.requests if r.method == "POST"]
    assert all(body.get("logprobs") is True and body.get("top_logprobs") == 10 for body in asked)


def test_recompute_and_final_answer_need_no_log_probabilities():
    lm, engine = scripted_lm(lambda system, user: reply(result="31") if "`result`" in system else reply(answer="3,000"))
    recompute = Recompute(lm)
    assert recompute.step(QUESTION, ["Step 1: 3 * 12 = 36."], "Step 2: 36 - 5 = 31.") == 1.0
    assert recompute.step(QUESTION, ["Step 1: 3 * 12 = 36."], "Step 2: 36 - 5 = 30.") == 0.0
    assert "36 - 5 = ?" in engine.prompts[0] and "31" not in engine.prompts[0].split("steps_so_far")[-1]
    assert recompute.step(QUESTION, [], "Step 1: Read it.") is None and engine.calls == 2  # nothing to check: no call
    final = FinalAnswer(lm)
    assert final.solution(QUESTION, "... so 3000 pens.") == 1.0
    assert final.solution(QUESTION, "... so 31 pens.", answer=31) == 0.0
    assert final.step(QUESTION, [], "Step 1: x") is None and recompute.solution(QUESTION, "x") is None


def test_a_backend_without_log_probabilities_is_refused_naming_the_alternative():
    lm, _ = scripted_lm(lambda system, user: reply(correct="yes"))
    with pytest.raises(LogprobsUnavailable, match="recompute or final_answer"):
        YesNo(lm).solution(QUESTION, "Step 1: 36 - 5 = 31.")


def test_each_verdict_call_is_counted_as_the_teachers(teacher):
    lm, _ = teacher
    student, _ = scripted_lm(lambda system, user: "")
    log = CallLog(teacher=lm, student=student)
    with log.recording():
        YesNo(lm).solution(QUESTION, "Step 1: 36 - 5 = 31.")
        Recompute(lm).step(QUESTION, [], "Step 1: 36 - 5 = 31.")
    tokens = log.tokens("teacher")
    assert len([c for c in log.calls if c.role == "teacher"]) == 2
    assert tokens["prompt_tokens"] > 0 and tokens["completion_tokens"] > 0
