"""SG data generation with scripted teacher and solver: what is kept, why the rest is not, and
that a run killed with SIGKILL resumes without asking any finished sample again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.scripted import scripted_lm
from helpers.sg import GOOD_GUIDANCE, answer_reply, field_of, gold_solver, guidance_reply

from instret.data.questions import Question
from instret.training.sg_data import REJECTIONS, REPORT, SAMPLES, TRAIN, generate_sg_data

# One question per outcome; the teacher's guidance (and the solver's answer) depend on the case word.
CASES = {
    "accepted": (GOOD_GUIDANCE, "gold"),
    "states": ("Asked: the total. Steps: 1. Add the apples. The total is 11 apples.", "gold"),
    "computes": ("Given: 5 apples and 6 more. Steps: 1. Compare them: 6 - 5 = 1 more bought than owned.", "gold"),
    "newnumber": ("Steps: 1. Add the apples; expect about 37 of them at most.", "gold"),
    "long": (" ".join(["Read the question again carefully."] * 60), "gold"),
    "empty": ("", "gold"),
    "nosteps": ("Asked: how many apples Ann has. Given: her apples and the ones she buys.", "gold"),
    "wrong": (GOOD_GUIDANCE, "wrong"),
}


def _question(case: str) -> Question:
    return Question(f"Case {case}: Ann has 5 apples and buys 6 more. How many apples does Ann have?", answer="11")


def _teacher(sequence=None):
    """Guidance by case word; `sequence` (a list) replaces it with successive replies."""

    def respond(system, user):
        if sequence is not None:
            return guidance_reply(sequence.pop(0))
        case = field_of(user, "question").split(":")[0].split()[-1]
        return guidance_reply(CASES[case][0])

    return scripted_lm(respond)


def _solver():
    def respond(system, user):
        case = field_of(user, "question").split(":")[0].split()[-1]
        return answer_reply(11 if CASES[case][1] == "gold" else 12)

    return scripted_lm(respond)


def test_each_outcome_is_kept_or_counted_by_its_reason(tmp_path):
    (teacher, teacher_engine), (solver, solver_engine) = _teacher(), _solver()
    questions = [_question(case) for case in CASES]
    report = generate_sg_data(questions, teacher=teacher, solver=solver, kind="numeric", out_dir=tmp_path,
                              samples=1, threads=2, progress=False)
    assert report.rejected == {reason: 1 for reason in REJECTIONS}
    assert (report.accepted_questions, report.accepted_samples, report.samples) == (1, 1, 8)
    assert teacher_engine.calls == 8
    assert solver_engine.calls == 2  # only guidance that passed the validator reaches the solver
    assert report.teacher_tokens["completion_tokens"] > 0 and report.solver_tokens["prompt_tokens"] > 0

    train = [json.loads(line) for line in (tmp_path / TRAIN).read_text().splitlines()]
    assert len(train) == 1
    system, user, assistant = train[0]["messages"]
    assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
    assert "Case accepted" in user["content"] and GOOD_GUIDANCE in assistant["content"]
    assert assistant["content"].startswith("[[ ## guidance ## ]]")
    saved = json.loads((tmp_path / REPORT).read_text())
    assert saved["rejected"]["computes"] == 1 and saved["acceptance_rate"] == pytest.approx(1 / 8)
    samples = {r["key"].split("#")[0]: r for r in map(json.loads, (tmp_path / SAMPLES).read_text().splitlines())}
    assert samples[_question("computes").id]["problems"][0] == "computes: 6 - 5 = 1"


def test_samples_until_one_is_accepted_each_fresh(tmp_path):
    import dspy

    replies = ["The answer is 11.", "Steps: 1. 6 - 5 = 1.", GOOD_GUIDANCE, GOOD_GUIDANCE]
    (teacher, teacher_engine), (solver, solver_engine) = _teacher(replies), _solver()
    temperatures = []
    complete = teacher_engine.complete
    teacher_engine.complete = lambda request: temperatures.append(request.config.temperature) or complete(request)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # a repeated request would hit it
    try:
        report = generate_sg_data([_question("accepted")], teacher=teacher, solver=solver, kind="numeric",
                                  out_dir=tmp_path, samples=4, temperature=0.9, progress=False)
    finally:
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    assert (teacher_engine.calls, solver_engine.calls) == (3, 1)  # stops at the first accepted sample
    assert temperatures == [0.9, 0.9, 0.9]
    assert report.rejected["states_answer"] == 1 and report.rejected["computes"] == 1
    assert report.accepted_samples == 1 and len(replies) == 1


def test_guidance_that_goes_on_to_solve_is_kept_up_to_the_solving(tmp_path):
    solving = GOOD_GUIDANCE + "\nStep 1: Ann has 5 + 6 = 11 apples."
    (teacher, _), (solver, solver_engine) = _teacher([solving]), _solver()
    report = generate_sg_data([_question("accepted")], teacher=teacher, solver=solver, kind="numeric",
                              out_dir=tmp_path, samples=1, progress=False)
    assert report.accepted_samples == 1 and "5 + 6" not in solver_engine.prompts[0]
    (sample,) = map(json.loads, (tmp_path / SAMPLES).read_text().splitlines())
    assert sample["guidance"] == GOOD_GUIDANCE.strip() and sample["written"] == solving
    (row,) = map(json.loads, (tmp_path / TRAIN).read_text().splitlines())
    assert "5 + 6" not in row["messages"][2]["content"]  # the guide model learns the plan, not the solving


def test_a_validator_of_ones_own(tmp_path):
    from instret.data.guidance import GuidanceCheck

    def on_topic(guidance, question, gold, *, kind, options, max_words):
        return GuidanceCheck(False, ("off_topic",), ("never mentions apples",)) if "apple" not in guidance \
            else GuidanceCheck(True)

    (teacher, _), (solver, solver_engine) = _teacher(), _solver()
    report = generate_sg_data([_question("accepted")], teacher=teacher, solver=solver, kind="numeric",
                              out_dir=tmp_path, samples=2, progress=False, validator=on_topic)
    assert report.rejected["off_topic"] == 2 and solver_engine.calls == 0


def test_sampling_needs_a_temperature_above_zero(tmp_path):
    (teacher, _), (solver, _) = _teacher(), _solver()
    with pytest.raises(ValueError, match="temperature"):
        generate_sg_data([_question("accepted")], teacher=teacher, solver=solver, kind="numeric",
                         out_dir=tmp_path, temperature=0)


def test_failed_calls_are_counted_and_asked_again(tmp_path):
    (teacher, teacher_engine), (solver, _) = _teacher(), _solver()
    teacher_engine.fail_after = 1
    questions = [_question("accepted"), _question("wrong")]
    report = generate_sg_data(questions, teacher=teacher, solver=solver, kind="numeric", out_dir=tmp_path,
                              samples=1, threads=1, progress=False)
    assert sum(report.failed.values()) == 1 and report.samples == 1
    teacher_engine.fail_after = None
    again = generate_sg_data(questions, teacher=teacher, solver=solver, kind="numeric", out_dir=tmp_path,
                             samples=1, threads=1, progress=False)
    assert (again.asked_now, again.samples, again.failed) == (1, 2, {})


def test_resume_after_sigkill_asks_nothing_again(tmp_path):
    n = 6
    worker = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "helpers" / "sg.py"), str(tmp_path), "0.4",
                               str(n)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / SAMPLES
    deadline = time.time() + 60
    while time.time() < deadline and worker.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert worker.poll() is None, "the worker finished before it could be killed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    finished = journal.read_text().count("\n")
    assert 2 <= finished < n

    from instret.data import SAMPLE_GSM8K
    from instret.data.loaders import load_questions

    questions = load_questions(str(SAMPLE_GSM8K)).questions[:n]
    teacher, teacher_engine = scripted_lm(lambda system, user: guidance_reply(GOOD_GUIDANCE))
    solver, solver_engine = gold_solver({q.text: q.answer for q in questions})
    report = generate_sg_data(questions, teacher=teacher, solver=solver, kind="numeric", out_dir=tmp_path,
                              progress=False)
    assert teacher_engine.calls == n - finished and solver_engine.calls == n - finished
    asked_now = {field_of(prompt, "question") for prompt in teacher_engine.prompts}
    done_before = {json.loads(line)["question_id"] for line in journal.read_text().splitlines()[:finished]}
    assert not {q.id for q in questions if q.text in asked_now} & done_before
    assert report.accepted_questions == n and len((tmp_path / TRAIN).read_text().splitlines()) == n


def test_from_solution_shows_the_worked_solution_to_the_teacher_only(tmp_path):
    seen = {"teacher": [], "solver": []}

    def teacher_respond(system, user):
        seen["teacher"].append((system, user))
        return guidance_reply(GOOD_GUIDANCE)

    def solver_respond(system, user):
        seen["solver"].append(system + user)
        return answer_reply(11)

    (teacher, _), (solver, _) = scripted_lm(teacher_respond), scripted_lm(solver_respond)
    worked = "Ann has 5+6 = <<5+6=11>>11 apples.\n#### 11"
    questions = [Question("Ann has 5 apples and buys 6 more. How many apples does Ann have?", answer="11",
                          solution=worked),
                 Question("Case accepted: Bo has 5 apples and buys 6 more. How many apples?", answer="11")]
    report = generate_sg_data(questions, teacher=teacher, solver=solver, kind="numeric", out_dir=tmp_path,
                              samples=1, threads=1, progress=False, from_solution=True)
    assert report.accepted_samples == 2 and report.settings["from_solution"] is True
    system, user = [(s, u) for s, u in seen["teacher"] if "Ann has" in u][0]
    assert field_of(user, "worked_solution") == "Ann has 5+6 = 11 apples."  # annotations and #### gone
    assert "for your reference only" in system
    assert not any("worked_solution" in s + u for s, u in seen["teacher"] if "Bo has" in u)  # the plain prompt
    assert not any("worked_solution" in p or "5+6" in p for p in seen["solver"])
    samples = {r["question_id"]: r for r in map(json.loads, (tmp_path / SAMPLES).read_text().splitlines())}
    assert [samples[q.id]["from_solution"] for q in questions] == [True, False]
    train = (tmp_path / TRAIN).read_text()
    assert "worked_solution" not in train and "5+6" not in train  # the guide model is trained without it


def test_from_solution_needs_worked_solutions(tmp_path):
    (teacher, engine), (solver, _) = _teacher(), _solver()
    with pytest.raises(ValueError, match="no training question has a worked solution"):
        generate_sg_data([_question("accepted")], teacher=teacher, solver=solver, kind="numeric",
                         out_dir=tmp_path / "sg", from_solution=True, progress=False)
    assert engine.calls == 0 and not (tmp_path / "sg").exists()  # nothing written for bad input
