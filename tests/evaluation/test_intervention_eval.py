"""Teacher intervention inside `evaluate` and `instret eval`: per-role tokens add up to exactly what
the server reported, method@value variants, the cost chart, and the log-probability check."""

from __future__ import annotations

import json
import threading

import pytest
from helpers import FIXTURES
from helpers.loopback import LoopbackServer, apply_stop, count_tokens
from helpers.intervention import FAST, TEACHER_SOLUTION, Script, continuing

from instret.cli.main import main
from instret.data.loaders import load_questions
from instret.evaluation.run import evaluate
from instret.lm.models import make_lm
from instret.lm.spec import ModelSpec
from instret.programs.methods import make_program

TEST_FILE = FIXTURES / "data" / "gsm8k_test.jsonl"
QUESTIONS = load_questions(str(TEST_FILE)).questions[:3]


class Metered(Script):
    """The intervention script, recording what the server bills each request (after `stop` and
    `max_tokens`), by model and by the test question it is about."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.billed: list[tuple[str, str, int, int]] = []
        self._lock = threading.Lock()

    def __call__(self, request) -> str:
        text = super().__call__(request)
        sent, _ = apply_stop(text, request.body.get("stop"),
                             request.body.get("max_completion_tokens") or request.body.get("max_tokens"))
        question = next(q.id for q in QUESTIONS if q.text[:50] in request.user)
        with self._lock:
            self.billed.append((request.model, question, count_tokens(request.text), count_tokens(sent)))
        return text

    def tokens(self, model: str, question: str) -> tuple[int, int]:
        rows = [b for b in self.billed if b[0] == model and b[1] == question]
        return sum(b[2] for b in rows), sum(b[3] for b in rows)


@pytest.fixture
def server():
    script = Metered(confidence={1: 0.99, 2: 0.4, 3: 0.95, 4: 0.3, 5: 0.99})
    with LoopbackServer(models=("teacher", "student"), responder=script, logprob=script.logprob) as running:
        running.script = script
        yield running


def lm(server, name: str):
    return make_lm(ModelSpec(f"openai/{name}", api_base=server.url + "/v1", extra=FAST))


def test_every_row_counts_teacher_and_student_tokens_exactly(server, tmp_path):
    teacher = lm(server, "teacher")
    summary = {}
    for method in ["quest_cot", "first_step@2", "on_uncertainty@0.9", "teacher_cot"]:
        server.script.billed.clear()  # one method per run: the server's bills are that method's
        report = evaluate(QUESTIONS, methods={method: make_program(method, kind="numeric", teacher=teacher)},
                          students={"student": lm(server, "student")}, kind="numeric", out_dir=tmp_path / method,
                          threads=3, teacher=teacher, progress=False)
        assert report.answered_now == len(QUESTIONS) and not report.failures
        for line in (tmp_path / method / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            billed = server.script.tokens("student", row["question_id"])
            assert (row["prompt_tokens"], row["completion_tokens"]) == billed, method
            assert ((row["teacher_prompt_tokens"], row["teacher_completion_tokens"])
                    == server.script.tokens("teacher", row["question_id"])), method
        (summary[method],) = [r for r in report.summary if "accuracy" in r]
    assert summary["quest_cot"]["teacher_tokens_per_question"] == 0
    assert summary["teacher_cot"]["teacher_share"] == 1.0
    for method in ("first_step@2", "on_uncertainty@0.9"):
        assert 0 < summary[method]["teacher_share"] < 1 and summary[method]["teacher_tokens_per_question"] > 0
    assert (tmp_path / "teacher_cot" / "teacher_cost.png").read_bytes()[:4] == b"\x89PNG"


def eval_command(server, out, *extra) -> list[str]:
    return ["eval", "--test", str(TEST_FILE), "--limit", "2", "--student", "openai/student",
            "--student-api-base", server.url + "/v1", "--teacher", "openai/teacher",
            "--teacher-api-base", server.url + "/v1", "--threads", "2", "--out", str(out), "--no-progress", *extra]


def test_eval_expands_thresholds_and_teacher_steps_into_one_method_each(server, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(eval_command(server, out, "--methods", "cot,first_step,on_uncertainty,teacher_cot",
                             "--teacher-steps", "1,2", "--threshold", "0.2,0.9", "--max-interventions", "1")) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    expected = {"cot", "first_step@1", "first_step@2", "on_uncertainty@0.2", "on_uncertainty@0.9", "teacher_cot"}
    assert {r["method"] for r in rows} == expected and len(rows) == 2 * len(expected)
    for row in rows:
        no_teacher = row["method"] in ("cot", "on_uncertainty@0.2")  # no student step is under 0.2
        assert (row["teacher_prompt_tokens"] > 0) == (not no_teacher)
        if row["method"].startswith("on_uncertainty"):
            assert int(row["outputs"]["interventions"]) == (row["method"] == "on_uncertainty@0.9")  # capped at 1
    printed = capsys.readouterr().out
    assert "on_uncertainty@0.9" in printed and "first_step@2" in printed
    assert (out / "teacher_cost.png").exists()
    teacher_asks = [json.loads(json.dumps(r.body)) for r in server.requests_for("/v1/chat/completions")
                    if r.model == "teacher" and "`steps`" in r.body["messages"][0]["content"]]
    assert sorted(r["stop"][0] for r in teacher_asks) == ["Step 2:", "Step 2:", "Step 3:", "Step 3:"]


def test_eval_handoff_reply_continues_the_teacher_steps_in_the_students_reply(server, tmp_path):
    server.responder = continuing(server.script, echo_prefix=True)
    out = tmp_path / "run"
    assert main(eval_command(server, out, "--methods", "first_step", "--handoff", "reply")) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["outputs"]["reasoning"].startswith(TEACHER_SOLUTION[0]) for r in rows)
    students = [r.body["messages"] for r in server.requests_for("/v1/chat/completions") if r.model == "student"]
    assert len(students) == 2 and all(m[-1]["role"] == "assistant" for m in students)
    for row in rows:  # the prefilled steps are read by the student: its prompt tokens, as the server bills them
        (messages,) = [m for m in students if QUESTIONS[[q.id for q in QUESTIONS].index(row["question_id"])].text in
                       m[-2]["content"]]
        assert row["prompt_tokens"] == count_tokens("\n\n".join(m["content"] for m in messages))
        assert row["teacher_prompt_tokens"] > 0


def test_eval_refuses_an_ollama_student_for_on_uncertainty_before_any_call(server, tmp_path, capsys):
    command = eval_command(server, tmp_path / "run", "--methods", "on_uncertainty")
    command[command.index("openai/student")] = "ollama_chat/student"
    command[command.index("--student-api-base") + 1] = server.url
    assert main(command) == 1
    error = capsys.readouterr().err
    assert "on_uncertainty needs token log-probabilities" in error
    assert "--student openai/student --student-api-base http://<ollama host>:11434/v1" in error
    assert not server.requests_for("/v1/chat/completions") and not server.requests_for("/api/chat")


def test_eval_refuses_a_bad_variant_value(server, tmp_path, capsys):
    assert main(eval_command(server, tmp_path / "run", "--methods", "first_step", "--teacher-steps", "two")) != 0
    assert "teacher_steps must be an integer" in capsys.readouterr().err


def test_answer_shows_the_teachers_steps_and_the_students_answer(server, capsys):
    command = ["answer", "--method", "first_step", "--student", "openai/student", "--student-api-base",
               server.url + "/v1", "--teacher", "openai/teacher", "--teacher-api-base", server.url + "/v1",
               QUESTIONS[0].text]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "The teacher's first steps (openai/teacher):\nStep 1: Tom starts with 3 * 12 = 36 pens." in printed
    assert "Reasoning (openai/student)" in printed and "Answer: 31" in printed


def test_answer_takes_a_variant_and_refuses_an_unknown_method(server, capsys):
    command = ["answer", "--method", "first_step@2", "--student", "openai/student", "--student-api-base",
               server.url + "/v1", "--teacher", "openai/teacher", "--teacher-api-base", server.url + "/v1",
               QUESTIONS[0].text]
    assert main(command) == 0
    assert "The teacher's first steps (openai/teacher):\n" + "\n".join(TEACHER_SOLUTION[:2]) + "\n\n" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(command[:2] + ["first_stp@2"] + command[3:])
    assert "unknown method 'first_stp@2'" in capsys.readouterr().err


@pytest.mark.parametrize("handoff, last_role", [("reply", "assistant"), ("prompt", "user")])
def test_answer_hands_the_teachers_steps_over_as_asked(server, capsys, handoff, last_role):
    server.responder = continuing(server.script, echo_prefix=True)
    command = ["answer", "--method", "first_step", "--handoff", handoff, "--student", "openai/student",
               "--student-api-base", server.url + "/v1", "--teacher", "openai/teacher", "--teacher-api-base",
               server.url + "/v1", QUESTIONS[0].text]
    assert main(command) == 0, capsys.readouterr().err
    (student,) = [r.body["messages"] for r in server.requests_for("/v1/chat/completions") if r.model == "student"]
    assert student[-1]["role"] == last_role
    assert TEACHER_SOLUTION[0] in student[-1]["content"]


def test_compile_gives_a_two_model_program_its_teacher(server, tmp_path, capsys):
    out = tmp_path / "first_step.json"
    command = ["compile", "--method", "first_step", "--train", str(TEST_FILE), "--limit", "2", "--student",
               "openai/student", "--student-api-base", server.url + "/v1", "--teacher", "openai/teacher",
               "--teacher-api-base", server.url + "/v1", "-o", str(out)]
    assert main(command) == 0, capsys.readouterr().err
    assert {r.model for r in server.requests_for("/v1/chat/completions")} == {"teacher", "student"}
    assert server.url not in out.read_text()  # saved without endpoints
    assert f"wrote {out}" in capsys.readouterr().out


def test_sizing_an_ollama_students_context_asks_the_teacher_nothing(server, tmp_path):
    command = eval_command(server, tmp_path / "run", "--methods", "first_step,teacher_cot")
    command[command.index("openai/student")] = "ollama_chat/student"
    command[command.index("--student-api-base") + 1] = server.url
    assert main(command) == 0
    teacher_calls = [r for r in server.requests_for("/v1/chat/completions") if r.model == "teacher"]
    assert len(teacher_calls) == 2 * 2  # one per question and method: none to measure the student's prompts
    assert {r.options.get("num_ctx") for r in server.requests_for("/api/chat")} == {2048}
