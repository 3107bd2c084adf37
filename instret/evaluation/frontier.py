"""The Pareto frontier of accuracy against cost, and how far each method is below it.

    >>> frontier_gaps([(0, 0.30), (400, 0.70), (100, 0.25), (1200, 0.50)])   # (cost, accuracy)
    [(True, 0.0), (True, 0.0), (False, 0.15), (False, 0.2)]   # 0.15 = 0.30 + 0.40 * 100/400 - 0.25

A method is on the frontier when no other costs at most as much and is at least as accurate, and
better in one of the two (two methods equal in both are both on it). The frontier between two of
its methods is the straight line joining them: what answering each question with one of the two,
chosen at random in the right proportion, achieves on average. Beyond the costliest frontier
method it stays flat: spending more never has to lower accuracy. Nothing off the frontier costs
less than its cheapest method (that method would not be on the frontier).
"""

from __future__ import annotations

from typing import Sequence

#: Costs on which `summarize` places every method: teacher tokens written, teacher price.
COST_AXES = {"written": "teacher_written_per_question", "price": "teacher_price_per_question"}


def frontier_gaps(points: Sequence[tuple[float, float]]) -> list[tuple[bool, float]]:
    """For each (cost, accuracy): (on the frontier, accuracy below the frontier at its cost; 0 on it)."""
    on = [not any(_dominates(other, point) for other in points) for point in points]
    frontier = sorted({point for point, kept in zip(points, on) if kept})
    return [(kept, 0.0 if kept else max(0.0, _frontier_at(frontier, cost) - accuracy))
            for (cost, accuracy), kept in zip(points, on)]


def frontier_accuracy(points: Sequence[tuple[float, float]], cost: float) -> float | None:
    """The accuracy the frontier of `points` (cost, accuracy) reaches at `cost`: what mixing its
    methods at random achieves for that cost. None below its cheapest method's cost."""
    frontier = sorted({point for point, (on, _) in zip(points, frontier_gaps(points)) if on})
    if not frontier or cost < frontier[0][0]:
        return None
    return _frontier_at(frontier, cost)


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] >= b[1] and a != b


def _frontier_at(frontier: list[tuple[float, float]], cost: float) -> float:
    """The frontier's accuracy at `cost`: linear between its points, flat after the last."""
    below = [point for point in frontier if point[0] <= cost]
    above = [point for point in frontier if point[0] > cost]
    (c1, a1) = below[-1]  # never empty: a dominated point's dominator costs no more than it
    if not above:
        return a1
    c2, a2 = above[0]
    return a1 + (a2 - a1) * (cost - c1) / (c2 - c1)


def mark_frontier(rows: list[dict]) -> None:
    """Add `on_frontier_<axis>` and `below_frontier_<axis>` (accuracy, 0.0 on it) to each answered
    row, per student, for every cost axis its rows all have."""
    students = {row["student"] for row in rows if "accuracy" in row}
    for student in students:
        mine = [row for row in rows if "accuracy" in row and row["student"] == student]
        for axis, key in COST_AXES.items():
            if any(row.get(key) is None for row in mine):
                continue
            for row, (on, gap) in zip(mine, frontier_gaps([(row[key], row["accuracy"]) for row in mine])):
                row[f"on_frontier_{axis}"], row[f"below_frontier_{axis}"] = on, gap
