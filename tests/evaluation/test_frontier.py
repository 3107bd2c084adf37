"""The Pareto frontier of accuracy against the teacher's cost: which methods are on it, how far
below it the others are (linear between its methods, flat beyond the costliest), per student and
per cost axis, and how the table marks it."""

from __future__ import annotations

import pytest

from instret.evaluation.frontier import frontier_accuracy, frontier_gaps, mark_frontier
from instret.evaluation.report import format_table


def gaps(points):
    return [(on, pytest.approx(gap)) for on, gap in frontier_gaps(points)]


def test_between_two_frontier_methods_the_gap_is_to_the_line_joining_them():
    assert gaps([(0, 0.30), (400, 0.70), (100, 0.25), (1200, 0.50)]) == [
        (True, 0.0), (True, 0.0), (False, 0.15), (False, 0.20)]  # 0.30 + 0.40 * 100/400 = 0.40; flat after 400


def test_a_costlier_method_that_is_no_more_accurate_is_off_it_even_at_no_gap():
    # beyond the costliest frontier method the frontier is flat: as accurate but dearer is off, 0 points below
    assert gaps([(10, 0.5), (20, 0.5)]) == [(True, 0.0), (False, 0.0)]


def test_equal_methods_are_both_on_it_and_a_tie_in_cost_is_decided_by_accuracy():
    assert gaps([(5, 0.4), (5, 0.4)]) == [(True, 0.0), (True, 0.0)]
    assert gaps([(5, 0.4), (5, 0.3), (0, 0.1)]) == [(True, 0.0), (False, 0.1), (True, 0.0)]


def test_each_frontier_method_rises_in_accuracy_with_cost_and_gaps_never_go_negative():
    points = [(0, 0.08), (9, 0.17), (157, 0.21), (401, 0.24), (447, 0.20), (549, 0.54), (1295, 0.44)]
    result = frontier_gaps(points)
    assert [on for on, _ in result] == [True, True, True, True, False, True, False]
    frontier = sorted(p for p, (on, _) in zip(points, result) if on)
    assert all(a[1] < b[1] for a, b in zip(frontier, frontier[1:]))
    assert result[4][1] == pytest.approx(0.24 + 0.30 * 46 / 148 - 0.20) and result[6][1] == pytest.approx(0.10)
    assert frontier_gaps([(3, 0.2)]) == [(True, 0.0)] and frontier_gaps([]) == []


def row(method, student, accuracy, written, price):
    return {"method": method, "student": student, "n": 10, "accuracy": accuracy, "ci_low": accuracy - 0.1,
            "ci_high": accuracy + 0.1, "parse_failure_rate": 0.0, "mean_prompt_tokens": 100,
            "mean_completion_tokens": 10, "mean_latency_s": 1.0, "teacher_tokens_per_question": written * 2,
            "teacher_written_per_question": written, "teacher_price_per_question": price}


def test_the_frontier_is_per_student_and_per_axis_and_the_table_marks_the_chosen_one():
    # a writes little but reads a lot: cheap on written tokens, dear on price
    rows = [row("a", "s1", 0.5, written=10, price=9e-3), row("b", "s1", 0.6, written=100, price=1e-3),
            row("a", "s2", 0.9, written=10, price=9e-3)]
    mark_frontier(rows)
    a, b, other = rows
    assert (a["on_frontier_written"], b["on_frontier_written"]) == (True, True)
    assert (a["on_frontier_price"], a["below_frontier_price"]) == (False, pytest.approx(0.1))
    assert other["on_frontier_written"] and other["on_frontier_price"]  # alone among s2's methods
    on_price = {line.split()[0]: line for line in format_table(rows[:2], "price").splitlines()[1:3]}
    on_written = {line.split()[0]: line for line in format_table(rows[:2], "written").splitlines()[1:3]}
    assert on_price["a"].endswith("-10.0 pts") and on_price["b"].endswith("on")
    assert on_written["a"].endswith("on") and on_written["b"].endswith("on")
    with pytest.raises(ValueError, match="cost axis 'tokens'"):
        format_table(rows, "tokens")


def test_an_axis_some_rows_lack_is_left_unmarked():
    rows = [row("a", "s", 0.5, 10, None), row("b", "s", 0.6, 20, 1e-3)]
    mark_frontier(rows)
    assert "on_frontier_written" in rows[0] and "on_frontier_price" not in rows[0]


def test_the_frontiers_accuracy_at_a_cost_is_interpolated_and_flat_past_its_costliest_method():
    points = [(0, 0.08), (150, 0.24), (550, 0.54), (1300, 0.44)]  # the last is off the frontier
    assert frontier_accuracy(points, 150) == pytest.approx(0.24)
    assert frontier_accuracy(points, 350) == pytest.approx(0.24 + 0.30 * 200 / 400)
    assert frontier_accuracy(points, 2000) == pytest.approx(0.54)
    assert frontier_accuracy([(100, 0.2), (300, 0.5)], 50) is None  # cheaper than anything measured
