"""Accuracy intervals and paired tests for comparing methods on the same questions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for an accuracy; sound at small n and near 0 or 1."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # Clamp: float rounding can leave the bound a hair inside 0 or 1 when all (or none) are right.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class PairedComparison:
    """Method A against baseline B on the same questions."""

    difference: float  # accuracy of A minus accuracy of B
    only_a: int  # questions A got right and B wrong
    only_b: int
    p_value: float  # exact McNemar (two-sided binomial test on the discordant pairs)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> PairedComparison:
    if len(a) != len(b):
        raise ValueError(f"paired results need equal lengths, got {len(a)} and {len(b)}")
    from scipy.stats import binomtest

    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    difference = (sum(a) - sum(b)) / len(a) if len(a) else 0.0
    return PairedComparison(difference, only_a, only_b, float(p_value))
