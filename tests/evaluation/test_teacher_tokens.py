"""Two-model methods: every row's tokens split into the teacher's and the student's, exactly as the
server billed them, also when both roles use the same model string.

The program is the smallest two-model method: a teacher predictor (pinned with `set_lm`) writes
a hint, the student (from `dspy.context`) reasons with it and answers.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import pytest
from helpers.loopback import LoopbackServer, apply_stop, count_tokens, dspy_responder

import dspy
from instret.data.questions import Question
from instret.evaluation.report import format_table, teacher_cost_figure
from instret.evaluation.run import RESULTS, evaluate
from instret.lm.calls import CallLog
from instret.lm.models import ModelSpec, make_lm
from instret.programs import ChainOfThoughtQA
from instret.programs.answering import AnsweringProgram
from instret.signatures.answering import answer_signature

QUESTIONS = [Question(text=f"Item {i}: what is {i} + 7?", answer=str(i + 7), source="teacher", line=i) for i in range(3)]


class HintedQA(AnsweringProgram):
    """The teacher writes a hint; the student answers with it."""

    def __init__(self, teacher):
        super().__init__("numeric")
        self.hint = dspy.Predict("question -> hint")
        self.hint.set_lm(teacher)
        self.answer = dspy.ChainOfThought(answer_signature("numeric", guided=True))

    def forward(self, question: str, options=None):
        return self.answer(question=question, guides=self.hint(question=question).hint)


class Billing:
    """Answers any DSPy prompt and books what the server reports as usage, by role and question."""

    def __init__(self):
        self.booked: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, request) -> str:
        reply = dspy_responder(request)
        sent, _ = apply_stop(reply, request.body.get("stop"),
                             request.body.get("max_completion_tokens") or request.body.get("max_tokens"))
        role = "teacher" if "`hint`" in request.system else "student"
        question = re.search(r"Item \d+", request.user).group(0)
        with self._lock:
            self.booked[role, question, "prompt"] += count_tokens(request.text)
            self.booked[role, question, "completion"] += count_tokens(sent)
        return reply


@pytest.fixture
def server():
    with LoopbackServer(models=("teacher", "student", "same"), responder=Billing()) as running:
        yield running


def lm(server, model, **fields):
    return make_lm(ModelSpec(f"openai/{model}", api_base=server.url + "/v1", num_retries=0, extra={"cache": False},
                             **fields))


@pytest.mark.parametrize("models", [("teacher", "student"), ("same", "same")], ids=["two-models", "one-model-string"])
def test_rows_split_tokens_by_role_as_billed(server, tmp_path, models):
    teacher, student = lm(server, models[0], max_tokens=300), lm(server, models[1])
    report = evaluate(QUESTIONS, methods={"hinted": HintedQA(teacher), "cot": ChainOfThoughtQA("numeric")},
                      students={"s": student}, kind="numeric", out_dir=tmp_path, threads=3, teacher=teacher,
                      progress=False)
    booked = server.responder.booked
    rows = [json.loads(line) for line in (tmp_path / RESULTS).read_text().splitlines()]
    for row in rows:
        item = re.search(r"Item \d+", row["inputs"]["question"]).group(0)
        hinted = row["method"] == "hinted"
        assert (row["teacher_prompt_tokens"], row["teacher_completion_tokens"]) == (
            (booked["teacher", item, "prompt"], booked["teacher", item, "completion"]) if hinted else (0, 0))
        assert row["teacher_prompt_tokens"] > 0 or not hinted
    # The student's share of both methods adds up to what the server billed the student.
    assert sum(r["prompt_tokens"] for r in rows) == sum(v for (role, _, part), v in booked.items()
                                                         if (role, part) == ("student", "prompt"))
    assert sum(r["completion_tokens"] for r in rows) == sum(v for (role, _, part), v in booked.items()
                                                             if (role, part) == ("student", "completion"))
    teacher_total = sum(v for (role, _, _), v in booked.items() if role == "teacher")
    hinted_student = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows if r["method"] == "hinted")
    summary = {row["method"]: row for row in report.summary}
    assert summary["hinted"]["teacher_tokens_per_question"] == teacher_total / 3
    assert summary["hinted"]["teacher_share"] == pytest.approx(teacher_total / (teacher_total + hinted_student))
    assert summary["cot"]["teacher_tokens_per_question"] == 0 and summary["cot"]["teacher_share"] == 0
    assert (tmp_path / "teacher_cost.png").read_bytes()[:4] == b"\x89PNG"
    assert "teacher tok/q" in format_table(report.summary)


def test_without_a_teacher_every_call_is_the_students(server, tmp_path):
    teacher = lm(server, "teacher")
    report = evaluate(QUESTIONS, methods={"hinted": HintedQA(teacher)}, students={"s": lm(server, "student")},
                      kind="numeric", out_dir=tmp_path, threads=3, progress=False)
    (row,) = report.summary
    assert row["teacher_tokens_per_question"] == 0 and not (tmp_path / "teacher_cost.png").exists()
    booked = server.responder.booked
    assert row["mean_prompt_tokens"] * 3 == sum(v for (_, _, part), v in booked.items() if part == "prompt")


def test_call_log_tells_a_copy_of_the_teacher_by_its_model_string(server):
    teacher, student = lm(server, "teacher"), lm(server, "student")
    log = CallLog(teacher=teacher, student=student)
    with log.recording(), dspy.context(lm=teacher.copy(temperature=0.5)):  # a copy, not the object
        dspy.Predict("question -> hint")(question="Item 1: what is 1 + 7?")
    assert [call.role for call in log.calls] == ["teacher"] and log.tokens("student")["prompt_tokens"] == 0


def test_the_cost_chart_names_every_method_and_joins_a_methods_variants():
    """Each row is a point with its own legend entry; on_uncertainty's thresholds form one curve,
    drawn in order of teacher tokens, and a method with one variant gets no line."""
    def row(method, tokens, accuracy):
        return {"method": method, "student": "s", "accuracy": accuracy, "ci_low": accuracy - 0.1,
                "ci_high": accuracy + 0.1, "teacher_tokens_per_question": tokens}

    rows = [row("cot", 0, 0.3), row("on_uncertainty@0.9", 1200, 0.5), row("on_uncertainty@0.5", 30, 0.25),
            row("on_uncertainty@0.7", 100, 0.25), row("teacher_cot", 440, 0.7)]
    axes = teacher_cost_figure(rows).axes[0]
    assert sorted(text.get_text() for text in axes.get_legend().get_texts()) == sorted(r["method"] for r in rows)
    (curve,) = [line for line in axes.get_lines() if len(line.get_xdata()) == 3]
    assert list(curve.get_xdata()) == [30, 100, 1200] and list(curve.get_ydata()) == [0.25, 0.25, 0.5]
    assert not [line for line in axes.get_lines() if 1 < len(line.get_xdata()) != 3]
