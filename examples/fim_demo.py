"""Summary statistics for a list of measurements (the completion demo's file).

`scripts/demo.sh` asks for a completion at the end of line 25, just after `return` in
`variance`, where the body has one obvious ending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def mean(values: list[float]) -> float:
    """Arithmetic mean of a non-empty list."""
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)


def variance(values: list[float]) -> float:
    """Population variance of a non-empty list."""
    if not values:
        raise ValueError("variance of an empty list")
    mu = mean(values)
    return


def stddev(values: list[float]) -> float:
    """Population standard deviation of a non-empty list."""
    return math.sqrt(variance(values))


@dataclass(frozen=True)
class Summary:
    """Mean, spread and range of a list of measurements."""

    count: int
    mean: float
    stddev: float
    low: float
    high: float


def summarize(values: list[float]) -> Summary:
    """Summarize a non-empty list of measurements."""
    return Summary(len(values), mean(values), stddev(values), min(values), max(values))
