"""`coder-lsp models list|prepare|verify`: the model cache."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from runtime.config import PRECISIONS
from runtime.models import (
    DAMAGED,
    DEFAULT_DRAFT,
    DEFAULT_PRECISION,
    DEFAULT_TARGET,
    NOT_INSTALLED,
    PREPARED,
    ModelStatus,
    cache_root,
    list_models,
    prepare,
    verify,
)


def add_parser(commands: Any) -> None:
    """Register `models` and its actions on the CLI's subparsers."""
    models = commands.add_parser("models", help="list, prepare or verify models")
    models.set_defaults(run=run)
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_commands.add_parser("list", help="embedded models and the cache's contents")
    prep = models_commands.add_parser(
        "prepare", help="assemble and convert a model (default: the target and draft models)"
    )
    prep.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="embedded name, .gguf file, Hugging Face directory or hub id org/name",
    )
    prep.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION, help="default: %(default)s"
    )
    prep.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    check = models_commands.add_parser(
        "verify", help="re-hash sources and check the cached ONNX directories"
    )
    check.add_argument("name", nargs="?", metavar="NAME", help="default: everything")


def run(args: argparse.Namespace) -> int:
    """Run `models ACTION`; the exit code."""
    if args.models_command == "list":
        _print_table(list_models())
        return 0
    if args.models_command == "prepare":
        names = [args.name] if args.name else [DEFAULT_TARGET, DEFAULT_DRAFT]
        for name in names:
            prepared = prepare(name, args.precision, progress=not args.no_progress, strict=True)
            print(f"{prepared.name}\t{prepared.precision}\t{prepared.directory}")
        return 0
    results = verify(args.name)
    for result in results:
        status = "ok  " if result.ok else "FAIL"
        print(f"{status} {result.name}  {result.item}: {result.message}")
    if not results:
        print("nothing to verify")
    return 0 if all(r.ok for r in results) else 1


def _print_table(statuses: Sequence[ModelStatus]) -> None:
    """One row per model, or per cache directory of it (prepared or damaged), then notes on
    what to fix."""
    rows = [("NAME", "SOURCE", "STATE", "PRECISION", "SIZE", "PATH")]
    notes = []
    for status in statuses:
        entries = [(e, PREPARED) for e in status.prepared] + [(e, DAMAGED) for e in status.damaged]
        if not entries:
            rows.append((status.name, status.kind, status.state, "-", "-", "-"))
        for entry, state in entries:
            size = _human(entry.size_bytes)
            rows.append(
                (status.name, status.kind, state, entry.precision, size, str(entry.directory))
            )
        if status.state == NOT_INSTALLED:
            notes.append(status.detail)
        notes += [f"{entry.directory}: {entry.problem}" for entry in status.damaged]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)] + [row[-1]]
        print("  ".join(cells).rstrip())
    print()
    print(
        f"defaults: target {DEFAULT_TARGET}, draft {DEFAULT_DRAFT}, precision {DEFAULT_PRECISION}"
    )
    print(f"cache: {cache_root()}")
    for note in notes:
        print(note)


def _human(size: int) -> str:
    if size < 1024**2:
        return f"{size / 1024:.1f} KB"
    if size < 1024**3:
        return f"{size / 1024**2:.1f} MB"
    return f"{size / 1024**3:.2f} GB"
