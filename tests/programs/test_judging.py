"""The teacher judges: teacher_check rewrites exactly the steps its verdict rejects, first_error
keeps the steps before the named one word for word and regenerates the rest, a cascade stops at
the first stage whose verdict accepts; all over the real HTTP path (the loopback server)."""

from __future__ import annotations

import json
import re

import dspy
import pytest
from helpers.intervention import FAST, QUESTION, Script, continues, field, given_steps, open_marker, reply
from helpers.loopback import LoopbackServer

from instret.lm.models import make_lm
from instret.lm.spec import ModelSpec
from instret.programs.judging import CascadeQA, FirstErrorQA, TeacherCheckQA, VerdictPolicy, verdict_of
from instret.programs.methods import NEEDS_TEACHER, make_program

STUDENT_COT = ["Step 1: Tom has 3 * 12 = 36 pens.", "Step 2: He gives away 5, so 36 - 5 = 30.",
               "Step 3: So 30 pens are left."]


class Judged(Script):
    """`Script`'s student and teacher, plus a teacher that judges. A student draft n computes
    `10 + n = <10 + n>`; the teacher's recompute is right except for the steps in `wrong`; it names
    `first_wrong` as the first wrong step of a whole solution and says yes to a solution with `31`."""

    def __init__(self, wrong=(), first_wrong: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.wrong, self.first_wrong = set(wrong), first_wrong
        self.broken = False  # the student's whole cot solution comes back without its answer field

    def __call__(self, request) -> str:
        user = request.body["messages"][-1]["content"]
        if "`result`" in request.system:
            step = field(user, "step")
            n = int(re.match(r"Step (\d+):", step).group(1))
            right = "31" if "final answer" in step else str(10 + n)
            return reply(result="0" if n in self.wrong else right)
        if "`first_wrong_step`" in request.system:
            return reply(first_wrong_step=str(self.first_wrong))
        if "`correct`" in request.system:
            return reply(correct="yes" if "31" in (field(user, "solution") or "") else "no")
        if request.model == "student" and not continues(request) and "`next_step`" not in request.system:
            if self.broken:
                return f"[[ ## reasoning ## ]]\n{chr(10).join(STUDENT_COT)}\n\n[[ ## completed ## ]]"
            return reply(reasoning="\n".join(STUDENT_COT), answer="30")  # the student's whole cot solution
        answered = super().__call__(request)
        n = open_marker(request)
        if request.model == "student" and n:
            return answered.replace(f" student step {n}\n", f" student step {n} makes 10 + {n} = {10 + n}\n")
        return answered


@pytest.fixture
def server():
    script = Judged()
    with LoopbackServer(models=("teacher", "student"), responder=script, logprob=script.logprob) as running:
        running.script = script
        yield running


def lm(server, name: str):
    return make_lm(ModelSpec(f"openai/{name}", api_base=server.url + "/v1", extra=FAST))


def chats(server, model: str, marker: str | None = None):
    asked = [r for r in server.requests_for("/v1/chat/completions") if r.model == model]
    return [r for r in asked if marker is None or marker in r.body["messages"][0]["content"]]


class Fixed:
    """A verdict of one's own (the `Verdict` Protocol): a set score per step number."""

    name = "fixed"

    def __init__(self, scores: dict[int, float | None]):
        self.scores = scores

    def solution(self, question, solution):
        return None

    def step(self, question, steps_so_far, step):
        return self.scores.get(len(steps_so_far) + 1, 1.0)


# --- teacher_check ------------------------------------------------------------------------

def test_teacher_check_rewrites_exactly_the_steps_the_recompute_verdict_rejects(server):
    server.script.wrong = {2, 4}
    program = make_program("teacher_check", kind="numeric", teacher=lm(server, "teacher"))
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)

    assert prediction.rewritten_steps == [2, 4] and prediction.interventions == 2
    assert prediction.step_verdicts == [1.0, 0.0, 1.0, 0.0, 1.0]
    recomputed = [field(r.body["messages"][-1]["content"], "step") for r in chats(server, "teacher", "`result`")]
    assert recomputed[:2] == ["Step 1: student step 1 makes 10 + 1 = ?", "Step 2: student step 2 makes 10 + 2 = ?"]
    written = prediction.reasoning.splitlines()
    assert written[1] == "Step 2: teacher fix 2" and written[3] == "Step 4: teacher fix 4"
    assert written[2] == "Step 3: student step 3 makes 10 + 3 = 13"  # an accepted draft stands as written
    assert not any(r.body.get("logprobs") for r in chats(server, "student"))  # the student needs none
    assert prediction.answer == 31.0


@pytest.mark.parametrize("threshold,rewritten", [(0.5, [2]), (0.7, [2, 3]), (0.1, [])])
def test_teacher_check_thresholds_its_verdict_and_takes_any_verdict(server, threshold, rewritten):
    verdict = Fixed({1: 0.9, 2: 0.2, 3: 0.6, 4: None})  # step 4 unjudged: accepted, never rewritten
    program = TeacherCheckQA("numeric", teacher=lm(server, "teacher"), verdict=verdict,
                             policy=VerdictPolicy(threshold, 3))
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.rewritten_steps == rewritten
    assert prediction.step_verdicts[:4] == [0.9, 0.2, 0.6, None]


def test_teacher_check_keeps_to_its_cap(server):
    server.script.wrong = {1, 2, 3, 4}
    program = make_program("teacher_check@0.5", kind="numeric", teacher=lm(server, "teacher"), max_interventions=1)
    with dspy.context(lm=lm(server, "student")):
        assert program(question=QUESTION).rewritten_steps == [1]


# --- first_error --------------------------------------------------------------------------

def test_first_error_keeps_the_steps_before_the_error_and_regenerates_the_rest(server):
    server.script.first_wrong = 2
    program = make_program("first_error", kind="numeric", teacher=lm(server, "teacher"))
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)

    judged = chats(server, "teacher", "`first_wrong_step`")
    assert len(judged) == 1
    shown = field(judged[0].body["messages"][-1]["content"], "solution")
    assert shown.splitlines() == STUDENT_COT + ["The final answer is 30.0."]  # every step, and the answer
    rewrite = [r for r in chats(server, "teacher") if continues(r)]
    assert len(rewrite) == 1 and open_marker(rewrite[0]) == 2 and given_steps(rewrite[0]) == STUDENT_COT[0]
    continued = [r for r in chats(server, "student") if continues(r)][-1]
    assert given_steps(continued).splitlines() == [STUDENT_COT[0], "Step 2: teacher fix 2"]  # kept verbatim
    assert "36 - 5 = 30" not in prediction.reasoning  # the wrong step and all after it are gone
    assert prediction.reasoning.startswith(f"{STUDENT_COT[0]}\nStep 2: teacher fix 2")
    assert prediction.first_wrong_steps == [2] and prediction.rewritten_steps == [2] and prediction.answer == 31.0


def test_first_error_lets_a_solution_without_an_error_stand(server):
    server.script.first_wrong = 0
    program = make_program("first_error@2", kind="numeric", teacher=lm(server, "teacher"))
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.answer == 30.0 and prediction.reasoning == "\n".join(STUDENT_COT)
    assert prediction.first_wrong_steps == [0] and prediction.rewritten_steps == []
    assert len(chats(server, "teacher")) == 1 and len(chats(server, "student")) == 1


def test_first_error_stops_when_the_teacher_names_a_step_it_has_already_settled(server):
    server.script.first_wrong = 2  # named again in round 2, where step 2 is the teacher's own
    program = make_program("first_error@3", kind="numeric", teacher=lm(server, "teacher"))
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.first_wrong_steps == [2, 2] and prediction.rewritten_steps == [2]


# --- cascade ------------------------------------------------------------------------------

def test_cascade_stops_at_the_first_stage_its_verdict_accepts(server):
    teacher = lm(server, "teacher")
    program = make_program("cascade", kind="numeric", teacher=teacher, stages="cot,teacher_cot")
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)  # the student's cot says 30: judged no, the teacher answers
    assert prediction.cascade_stage == "teacher_cot" and prediction.cascade_verdicts == [0.0]
    assert len(chats(server, "teacher", "`correct`")) == 1  # the last stage is never judged

    server.reset()
    server.script.first_wrong = 2  # first_error's rewrite leads the student to 31: accepted
    program = make_program("cascade@0.5", kind="numeric", teacher=teacher)  # cot, first_error, teacher_cot
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.cascade_stage == "first_error" and prediction.cascade_verdicts == [0.0, 1.0]
    assert prediction.answer == 31.0 and prediction.rewritten_steps == [2]


def test_a_student_reply_that_breaks_the_format_is_still_judged_or_passed_over(server):
    from dspy.utils.exceptions import AdapterParseError

    server.script.broken, server.script.first_wrong = True, 2
    teacher = lm(server, "teacher")
    with dspy.context(lm=lm(server, "student")):
        fixed = make_program("first_error", kind="numeric", teacher=teacher)(question=QUESTION)
    assert fixed.first_wrong_steps == [2] and fixed.answer == 31.0  # judged from its raw steps, then rewritten
    assert fixed.reasoning.startswith(f"{STUDENT_COT[0]}\nStep 2: teacher fix 2")

    server.script.first_wrong = 0  # judged right, but it has no answer: its own parse error stands, for recovery
    with dspy.context(lm=lm(server, "student")), pytest.raises(AdapterParseError):
        make_program("first_error", kind="numeric", teacher=teacher)(question=QUESTION)

    server.reset()
    with dspy.context(lm=lm(server, "student")):
        cascade = make_program("cascade", kind="numeric", teacher=teacher, stages="cot,teacher_cot")
        prediction = cascade(question=QUESTION)
    assert prediction.cascade_stage == "teacher_cot" and prediction.cascade_verdicts == [None]
    assert not chats(server, "teacher", "`correct`")  # nothing to judge: no verdict asked


def test_registry_variants_defaults_and_refusals(server, tmp_path):
    teacher = lm(server, "teacher")
    assert {"teacher_check", "first_error", "cascade"} <= NEEDS_TEACHER
    assert make_program("teacher_check@0.3", kind="numeric", teacher=teacher).policy.threshold == 0.3
    assert make_program("teacher_check", kind="numeric", teacher=teacher).verdict.name == "recompute"
    assert make_program("first_error@2", kind="numeric", teacher=teacher).rounds == 2
    cascade = make_program("cascade@0.7", kind="numeric", teacher=teacher)
    assert isinstance(cascade, CascadeQA) and cascade.accept == 0.7 and cascade.verdict.name == "yes_no"
    assert cascade.names == ["cot", "first_error", "teacher_cot"] and isinstance(cascade.stages[1], FirstErrorQA)
    assert verdict_of("teacher_check@0.5") == "recompute" and verdict_of("cascade", "score") == "score"
    assert make_program("cascade", kind="numeric", teacher=teacher).accept == 0.8  # read from the train verdicts
    for bad, options, message in [("cascade", {"verdict": "recompute"}, "judges steps, not solutions"),
                                  ("cascade", {"stages": "cot"}, "two stages or more"),
                                  ("cascade", {"stages": "cot,cascade"}, "cannot hold another cascade"),
                                  ("cascade@2", {}, r"accept must be a verdict in \[0, 1\]"),
                                  ("first_error@0", {}, "1 or more"),
                                  ("teacher_check", {"verdict": "vibes"}, "unknown verdict 'vibes'")]:
        with pytest.raises(ValueError, match=message):
            make_program(bad, kind="numeric", teacher=teacher, **options)
    for method in ("teacher_check", "first_error", "cascade"):
        with pytest.raises(ValueError, match="--teacher MODEL"):
            make_program(method, kind="numeric")

    path = tmp_path / "cascade.json"
    cascade.save(str(path))
    assert server.url not in path.read_text()
    fresh = make_program("cascade@0.7", kind="numeric", teacher=teacher)
    fresh.load(str(path))
    pinned = {name: predictor.lm for name, predictor in fresh.named_predictors()}
    assert pinned["verdict.judge_solution"] is teacher and pinned["stages[1].find"] is teacher
    assert pinned["stages[0].answer.predict"] is None  # the student's cot stays the student's
    assert json.loads(path.read_text())  # a plain JSON state


def test_a_teacher_without_log_probabilities_is_refused_before_the_run_naming_the_alternative(capsys):
    from instret.cli.answer import VERDICT_NAMES, _logprobs_ready
    from instret.programs.verdicts import VERDICTS

    assert set(VERDICT_NAMES) == set(VERDICTS)
    student, ollama = ModelSpec("openai/student"), ModelSpec("ollama_chat/qwen2.5:1.5b")
    assert _logprobs_ready([student], ["teacher_check"], ollama)  # recompute: no log-probabilities read
    assert not _logprobs_ready([student], ["cascade"], ollama)  # yes_no by default
    error = capsys.readouterr().err
    assert "cascade's yes_no verdict needs token log-probabilities from the teacher" in error
    assert "--teacher openai/qwen2.5:1.5b" in error and "--verdict final_answer" in error
    assert not _logprobs_ready([student], ["teacher_check@0.5"], ollama, "score")
    assert _logprobs_ready([student], ["cascade"], ollama, "final_answer")
