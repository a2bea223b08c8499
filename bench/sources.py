"""Real source files the benchmarks read (installed packages we did not write) and how they
pick items from several of them."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")


def module_path(name: str, hint: str = "") -> Path:
    """The source file of an installed module (a package: its `__init__.py`)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"module {name!r} is not installed{hint}")
    return Path(spec.origin)


def line_starts(text: str) -> list[int]:
    """Offset of each line's first character; index i is line i + 1 (ast's numbering)."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    return starts


def round_robin(groups: Sequence[Sequence[Item]], limit: int) -> list[Item]:
    """Up to `limit` items taking one from each group in turn, so that every file is sampled."""
    chosen: list[Item] = []
    for index in range(max((len(group) for group in groups), default=0)):
        for group in groups:
            if index < len(group) and len(chosen) < limit:
                chosen.append(group[index])
    return chosen
