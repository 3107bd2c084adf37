"""Teacher tokens spent once (a corpus's guides, SG data) are amortised over the questions a
method answered and counted in its teacher tokens per question and teacher share."""

import json

import pytest
from helpers.evaluation import METHODS, TEST_FILE, corpus, run_eval, student  # noqa: F401  (fixtures)

from instret.cli.main import main
from instret.evaluation.report import format_table, summarize
from instret.evaluation.setup_cost import SetupCost, setup_costs


def record(method: str, question: str, student_tokens: int, teacher_tokens: int = 0) -> dict:
    return {"method": method, "student": "s", "question_id": question, "correct": True, "parse_failed": False,
            "recovery": "direct", "prompt_tokens": student_tokens, "completion_tokens": 0,
            "teacher_prompt_tokens": teacher_tokens, "teacher_completion_tokens": 0, "latency_s": 1.0}


def test_a_one_off_cost_is_spread_over_the_rows_questions():
    records = [record(m, q, 100, 50 if m == "first_step" else 0) for m in ("cot", "instruction_retrieval",
                                                                           "first_step") for q in "abcd"]
    guides = SetupCost("corpus c's 3 guides", 900, 100)
    rows = {r["method"]: r for r in summarize(records, setup={"instruction_retrieval": guides})}
    ir = rows["instruction_retrieval"]
    assert ir["teacher_tokens_per_question"] == 1000 / 4 and ir["teacher_setup_tokens"] == 1000
    assert ir["teacher_share"] == 1000 / (1000 + 400)
    assert rows["first_step"]["teacher_tokens_per_question"] == 50 and "teacher_setup_tokens" not in rows["first_step"]
    assert rows["cot"]["teacher_tokens_per_question"] == 0 and rows["cot"]["teacher_share"] == 0
    assert ("instruction_retrieval (s): teacher tok/q includes corpus c's 3 guides, 1,000 teacher tokens spent "
            "once, amortised over its 4 questions (250 per question)") in format_table(list(rows.values()))


def test_variants_share_their_methods_cost_and_a_bad_sg_folder_is_named(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"teacher_tokens": {"prompt_tokens": 7, "completion_tokens": 3}}))
    costs = setup_costs(["cot", "solution_guidance", "first_step@2"], corpus=None, sg_data=tmp_path)
    assert list(costs) == ["solution_guidance"] and costs["solution_guidance"].tokens == 10
    with pytest.raises(ValueError, match=r"empty/report.json: no such file"):
        setup_costs(["solution_guidance"], sg_data=tmp_path / "empty")
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="not an SG data report"):
        setup_costs(["solution_guidance"], sg_data=tmp_path)


@pytest.mark.slow
def test_eval_counts_the_corpus_guides_as_instruction_retrievals_teacher_cost(corpus, student, tmp_path, capsys):  # noqa: F811
    assert run_eval(corpus, student, tmp_path / "run", "--limit", "4") == 0
    writing = json.loads((corpus / "manifest.json").read_text())["guide_writing"]
    spent = writing["prompt_tokens"] + writing["completion_tokens"]
    assert spent > 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "run" / "summary.json").read_text())}
    assert rows["instruction_retrieval"]["teacher_setup_tokens"] == spent
    assert rows["instruction_retrieval"]["teacher_tokens_per_question"] == spent / 4
    assert all(not rows[m]["teacher_tokens_per_question"] for m in METHODS.split(",") if m != "instruction_retrieval")
    assert f"{spent:,} teacher tokens spent once, amortised over its 4 questions" in capsys.readouterr().out
    assert (tmp_path / "run" / "teacher_cost.png").exists()


def test_eval_stops_on_a_bad_sg_data_folder_before_asking_anything(corpus, student, tmp_path, capsys):  # noqa: F811
    assert run_eval(corpus, student, tmp_path / "run", "--sg-data", str(tmp_path / "nowhere")) != 0
    assert "nowhere/report.json: no such file" in capsys.readouterr().err
    assert not student.requests_for("/api/chat")
