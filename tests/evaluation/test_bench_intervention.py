"""benchmarks/bench_intervention.py reads a new method against today's frontier from its journal:
interpolated at the method's own teacher cost, with a paired bootstrap interval."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_intervention  # noqa: E402

from instret.evaluation.cost import LOCAL_PRICE


def answers(method: str, right: int, written: int, n: int = 10) -> list[dict]:
    return [{"method": method, "student": "s", "question_id": f"q{q}", "correct": q < right,
             "teacher_completion_tokens": written, "teacher_prompt_tokens": 0} for q in range(n)]


def test_a_new_method_is_read_against_the_line_joining_todays_methods_at_its_cost():
    # today: cot 2 of 10 for nothing, teacher_cot 6 of 10 for 200 written tokens; the line gives 4 of 10
    # at 100 tokens, where first_error gets 6: 20 points above, on the same questions
    records = answers("cot", 2, 0) + answers("teacher_cot", 6, 200) + answers("first_error", 6, 100)
    point, low, high = bench_intervention.above_frontier(records, "first_error", "written", LOCAL_PRICE, rounds=200)
    assert point == pytest.approx(0.20)
    assert low <= point <= high and high <= 0.4 + 1e-9
    cheaper = answers("cot", 2, 0) + answers("teacher_cot", 6, 200) + answers("cascade", 2, 100)
    assert bench_intervention.above_frontier(cheaper, "cascade", "written", LOCAL_PRICE, rounds=50)[0] == pytest.approx(-0.2)
