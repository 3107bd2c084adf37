"""The eval summary's lines read as sentences: one answer, two answers."""

from instret.evaluation.report import format_table, summarize


def record(question: str, truncated: bool) -> dict:
    return {"method": "cot", "student": "s", "question_id": question, "correct": True, "parse_failed": False,
            "recovery": "truncated" if truncated else "direct", "prompt_tokens": 10, "completion_tokens": 5,
            "teacher_prompt_tokens": 0, "teacher_completion_tokens": 0, "latency_s": 1.0,
            "truncated": truncated, "hit_max_tokens": truncated}


def test_one_answer_at_max_tokens_is_singular_and_two_are_plural():
    one = format_table(summarize([record("a", True), record("b", False)]))
    two = format_table(summarize([record("a", True), record("b", True)]))
    assert "1 answer reached max_tokens" in one and "1 answers" not in one
    assert "2 answers reached max_tokens" in two
