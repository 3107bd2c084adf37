"""`instret eval` and `instret compile` end to end: a real corpus, a student over loopback HTTP."""

import json

import pytest
from helpers.evaluation import (METHODS, TEST_FILE, TEST_QUESTIONS, corpus, gold_for_even_questions,  # noqa: F401
                                run_eval, student)  # (corpus, student: fixtures)
from helpers.loopback import LoopbackServer, answers

from instret.cli.main import main
from instret.data import SAMPLE_GSM8K

pytestmark = pytest.mark.slow


def test_eval_table_files_and_resume(corpus, student, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_eval(corpus, student, out, "--limit", "5") == 0
    asked_first = len(student.requests_for("/api/chat"))
    assert asked_first >= 5 * 5

    assert run_eval(corpus, student, out) == 0  # all 12: only the 7 new questions are asked
    asked_second = len(student.requests_for("/api/chat")) - asked_first
    assert 7 * 5 <= asked_second < 12 * 5
    printed = capsys.readouterr().out
    assert "from an earlier run" in printed and "instruction_retrieval" in printed and "vs zero-shot" in printed

    num_ctx = {r.options.get("num_ctx") for r in student.requests_for("/api/chat")}
    assert len(num_ctx) == 1 and num_ctx.pop() >= 2048  # sized from the programs' prompts
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 12 * 5 and len({r["key"] for r in records}) == 60
    assert all(r["recovery"] == "direct" and not r["parse_failed"] for r in records)
    guided = [r["outputs"] for r in records if r["method"] == "instruction_retrieval"]
    assert all(isinstance(o["reference_ids"], list) for o in guided) and any(o["reference_ids"] for o in guided)
    assert all(isinstance(score, float) for o in guided for score in o["reference_scores"])  # read back as lists
    summary = {row["method"]: row for row in json.loads((out / "summary.json").read_text())}
    assert set(summary) == set(METHODS.split(","))
    for row in summary.values():
        assert row["n"] == 12 and row["accuracy"] == 0.5 and row["ci_low"] < 0.5 < row["ci_high"]
    assert summary["cot"]["vs_zero_shot_diff"] == 0 and summary["cot"]["vs_zero_shot_p"] == 1.0
    assert (out / "summary.csv").read_text().startswith("method,student,n,correct,accuracy")
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"

    before = len(student.requests_for("/api/chat"))
    assert run_eval(corpus, student, out) == 0
    assert len(student.requests_for("/api/chat")) == before  # a finished eval asks nothing again


def test_each_method_prompt_holds_what_it_claims(corpus, student, tmp_path):
    assert run_eval(corpus, student, tmp_path, "--limit", "1") == 0
    prompts = [r.body["messages"][-1]["content"] for r in student.requests_for("/api/chat")]
    with_guides = [p for p in prompts if "### Guide 1: Solving problems like" in p]
    with_passages = [p for p in prompts if "### Example 1" in p and "Worked solution:" in p]
    generic = [p for p in prompts if "### Guide 1:" in p and "Solving problems like" not in p]
    bare = [p for p in prompts if "[[ ## guides ## ]]" not in p]
    assert len(with_guides) == len(with_passages) == len(generic) == 1 and len(bare) == 2


def test_leaked_test_questions_are_refused(corpus, student, tmp_path, capsys):
    code = main(["eval", "--corpus", str(corpus), "--test", str(SAMPLE_GSM8K), "--student", "ollama_chat/student",
                 "--student-api-base", student.url, "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "200 of 200 test questions are in corpus" in capsys.readouterr().err
    assert not student.requests_for("/api/chat")


def test_missing_student_model_stops_before_the_run(corpus, student, tmp_path, capsys):
    code = main(["eval", "--corpus", str(corpus), "--test", str(TEST_FILE), "--student", "ollama_chat/absent",
                 "--student-api-base", student.url, "--out", str(tmp_path), "--no-progress"])
    assert code == 1 and "ollama pull absent" in capsys.readouterr().err
    assert not student.requests_for("/api/chat")


def test_compile_save_load_with_another_student(corpus, student, tmp_path):
    program = tmp_path / "compiled.json"
    assert main(["compile", "--corpus", str(corpus), "--student", "ollama_chat/student", "--student-api-base",
                 student.url, "--train", str(TEST_FILE), "--limit", "6", "--optimizer", "bootstrap",
                 "-o", str(program)]) == 0
    state = json.loads(program.read_text())
    text = program.read_text()
    assert "api_base" not in text and "api_key" not in text and student.url not in text
    demos = [demo for predictor in state.values() if isinstance(predictor, dict) for demo in predictor.get("demos", [])]
    assert demos, "bootstrapping kept no demos"

    with LoopbackServer(models=("other",), responder=answers(answer=gold_for_even_questions)) as other:
        assert main(["eval", "--corpus", str(corpus), "--test", str(TEST_FILE), "--limit", "2", "--methods",
                     "instruction_retrieval", "--program", f"instruction_retrieval={program}", "--student",
                     "openai/other", "--student-api-base", other.url + "/v1", "--out", str(tmp_path / "run"),
                     "--no-progress"]) == 0
        prompts = [r.body["messages"] for r in other.requests_for("/v1/chat/completions")]
    assert prompts and all(len(messages) > 2 for messages in prompts)  # the loaded demos reach the new student


def test_answer_prints_the_retrieved_guides_and_the_answer(corpus, student, capsys):
    question = TEST_QUESTIONS[0]
    assert main(["answer", "--corpus", str(corpus), "--student", "ollama_chat/student", "--student-api-base",
                 student.url, "--mode", "questions", question.text]) == 0
    printed = capsys.readouterr().out
    assert "Retrieved guides:" in printed and "Solving problems like" in printed
    assert f"Answer: {float(question.answer)}" in printed and "Reasoning (ollama_chat/student)" in printed
    prompt = student.requests_for("/api/chat")[-1].body["messages"][-1]["content"]
    assert "### Guide 1: Solving problems like" in prompt


def test_several_students_each_get_a_row(corpus, student, tmp_path):
    with LoopbackServer(models=("other",), responder=answers(answer=0.0)) as other:
        assert main(["eval", "--corpus", str(corpus), "--test", str(TEST_FILE), "--limit", "4", "--methods",
                     "zero_shot,cot", "--students", f"ollama_chat/student@{student.url},openai/other@{other.url}/v1",
                     "--out", str(tmp_path), "--no-progress"]) == 0
        asked_other = len(other.requests_for("/v1/chat/completions"))
    rows = {(r["method"], r["student"]): r for r in json.loads((tmp_path / "summary.json").read_text())}
    assert set(rows) == {(m, s) for m in ("zero_shot", "cot") for s in ("ollama_chat/student", "openai/other")}
    assert rows[("cot", "ollama_chat/student")]["accuracy"] == 0.5 and rows[("cot", "openai/other")]["accuracy"] == 0
    assert asked_other == 2 * 4 and len(student.requests_for("/api/chat")) == 2 * 4


@pytest.mark.parametrize("optimizer", ["mipro", "gepa"])
def test_compile_with_mipro_and_gepa(corpus, student, tmp_path, optimizer, capsys):
    common = ["compile", "--corpus", str(corpus), "--student", "ollama_chat/student", "--student-api-base",
              student.url, "--train", str(TEST_FILE), "--optimizer", optimizer, "--method", "cot",
              "-o", str(tmp_path / "compiled.json")]
    if optimizer == "gepa":  # GEPA reflects with a stronger model, and says so when there is none
        assert main(common) == 2 and "GEPA reflects with a stronger model" in capsys.readouterr().err
        common += ["--teacher", "ollama_chat/student", "--teacher-api-base", student.url]
    assert main(common) == 0
    state = json.loads((tmp_path / "compiled.json").read_text())
    assert "answer.predict" in state and student.url not in (tmp_path / "compiled.json").read_text()
