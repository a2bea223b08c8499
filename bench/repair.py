"""Repair benchmark: real functions broken on purpose, repaired with and without prompt lookup.

    python -m bench.repair [--model NAME] [--limit N] [--json PATH]

Snippets come from functions of the installed standard library (their source through
`inspect`, dedented, one file each). Each is broken three ways when it can be:

- misspelt local: the last read of a local variable loses a letter (pyflakes: undefined name);
- missing colon: the colon ending the first `if`/`for`/`while`/`with` header is removed;
- missing bracket: the last `)` of the first one-line call statement is removed.

Each broken file goes through `lsp_server.code_actions.repair.repair` (2 attempts, the second
sampled) on the diagnostic the local checks report. Success is decided by a check independent of the
repair's own verification: the repaired file's AST equals the original function's (comments and
formatting aside). Each mode loads a fresh engine, so neither mode reuses the other's KV cache.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import re
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types

from lsp_server.code_actions.assist import ActionContext
from lsp_server.code_actions.repair import RepairOptions, local_diagnostics, repair
from runtime.engine import EngineOptions, LocalEngine

logger = logging.getLogger(__name__)

# (module, function): small and mid-sized pure-Python functions of the standard library.
FUNCTIONS = (
    ("textwrap", "indent"),
    ("posixpath", "relpath"),
    ("posixpath", "normpath"),
    ("colorsys", "rgb_to_hsv"),
    ("colorsys", "hls_to_rgb"),
    ("string", "capwords"),
    ("difflib", "get_close_matches"),
    ("statistics", "median_grouped"),
    ("fnmatch", "filter"),
    ("shlex", "quote"),
    ("glob", "escape"),
    ("html", "escape"),
    ("calendar", "monthrange"),
    ("base64", "b64decode"),
)
HEADER = re.compile(r"^(\s*)(if|elif|for|while|with)\b.*:\s*$")
CALL_LINE = re.compile(r"^\s*[\w.\[\]]+( = |\()?.*\)\s*$")


@dataclass(frozen=True)
class Case:
    """One broken snippet and the source it must come back to."""

    name: str
    kind: str  # misspelt local | missing colon | missing bracket
    original: str
    broken: str
    line: int  # 0-based line that was broken


def _source(module: str, function: str) -> str:
    loaded = __import__(module)
    return textwrap.dedent(inspect.getsource(getattr(loaded, function)))


def _misspell(source: str) -> tuple[str, int] | None:
    tree = ast.parse(source)
    stored = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    loads = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Name)
        and isinstance(n.ctx, ast.Load)
        and n.id in stored
        and len(n.id) > 3
    ]
    if not loads:
        return None
    node = max(loads, key=lambda n: (n.lineno, n.col_offset))
    wrong = node.id[:-2] + node.id[-1]
    if re.search(rf"\b{re.escape(wrong)}\b", source):
        return None
    lines = source.split("\n")
    row = node.lineno - 1
    line = lines[row]
    lines[row] = line[: node.col_offset] + wrong + line[node.col_offset + len(node.id) :]
    return "\n".join(lines), row


def _edit_first(
    source: str, pattern: re.Pattern[str], edit: Callable[[str], str]
) -> tuple[str, int] | None:
    lines = source.split("\n")
    for row, line in enumerate(lines[1:], 1):
        if pattern.match(line) and "#" not in line and '"' not in line and "'" not in line:
            lines[row] = edit(line)
            return "\n".join(lines), row
    return None


def cases() -> list[Case]:
    """Every breakable snippet, three kinds per function when possible."""
    found = []
    breakers: dict[str, Callable[[str], tuple[str, int] | None]] = {
        "misspelt local": _misspell,
        "missing colon": lambda s: _edit_first(s, HEADER, lambda line: line.rstrip()[:-1]),
        "missing bracket": lambda s: _edit_first(
            s, CALL_LINE, lambda line: line[: line.rstrip().rfind(")")]
        ),
    }
    for module, function in FUNCTIONS:
        try:
            source = _source(module, function)
        except (AttributeError, OSError, TypeError):
            continue  # C-implemented on this Python
        for kind, breaker in breakers.items():
            broken = breaker(source)
            if broken is not None:
                case = Case(f"{module}.{function}", kind, source, *broken)
                if target_of(case) is not None:
                    found.append(case)
    return found


def target_of(case: Case) -> types.Diagnostic | None:
    """The error the local checks report on the broken line (None: the break made none, e.g.
    it fell inside a docstring)."""
    for diagnostic in local_diagnostics("snippet.py", case.broken):
        error = diagnostic.severity == types.DiagnosticSeverity.Error
        if error and diagnostic.range.start.line == case.line:
            return diagnostic
    return None


def same_code(a: str, b: str) -> bool:
    """Whether two sources have the same AST (formatting and comments aside)."""
    try:
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except SyntaxError:
        return False


def run_mode(model: str, lookup: bool, chosen: list[Case], folder: Path) -> list[dict[str, Any]]:
    """Repair every case with a fresh engine; one record per case."""
    # No draft model: the modes differ by prompt lookup alone.
    options = EngineOptions(model=model, draft_model=None)
    context = ActionContext(LocalEngine.load(options, progress=False))
    records = []
    for index, case in enumerate(chosen):
        path = folder / f"case{index:02d}.py"
        path.write_text(case.broken, encoding="utf-8")
        target = target_of(case)
        assert target is not None, "cases() keeps only cases with a diagnostic"
        result = repair(
            context,
            path,
            case.broken,
            target,
            use_context=False,
            options=RepairOptions(lookup=lookup),
        )
        correct = result.verified and same_code(result.patched or "", case.original)
        records.append(
            {
                "case": case.name,
                "kind": case.kind,
                "lookup": lookup,
                "verified": result.verified,
                "correct": correct,
                "latency_ms": result.latency_ms,
                "attempts": result.attempts,
                "tokens": result.generated_tokens,
                "lookup_proposed": result.speculation.lookup_proposed,
                "lookup_accepted": result.speculation.lookup_accepted,
                "reason": result.reason,
            }
        )
        print(
            f"{'lookup' if lookup else 'plain '} {case.kind:15} {case.name:28} "
            f"{'OK ' if correct else 'verified-only' if result.verified else 'no fix'} "
            f"{result.latency_ms:.0f} ms",
            file=sys.stderr,
        )
    return records


def summary(records: list[dict[str, Any]]) -> list[str]:
    """The Markdown table rows: per mode, then per kind with lookup."""
    rows = [
        "| mode | cases | verified | correct (AST = original) | median latency | p90 latency "
        "| lookup tokens accepted |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for lookup in (False, True):
        mine = [r for r in records if r["lookup"] is lookup]
        if not mine:
            continue
        latencies = sorted(r["latency_ms"] for r in mine)
        p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))]
        proposed = sum(r["lookup_proposed"] for r in mine)
        accepted = sum(r["lookup_accepted"] for r in mine)
        tokens = sum(r["tokens"] for r in mine)
        share = (
            f"{accepted}/{tokens} ({accepted / max(proposed, 1):.0%} of drafted)" if lookup else "-"
        )
        rows.append(
            f"| {'prompt lookup' if lookup else 'plain decoding'} | {len(mine)} "
            f"| {sum(r['verified'] for r in mine)} | {sum(r['correct'] for r in mine)} "
            f"({sum(r['correct'] for r in mine) / len(mine):.0%}) "
            f"| {statistics.median(latencies):,.0f} ms | {p90:,.0f} ms | {share} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--limit", type=int, default=0, help="first N cases only")
    parser.add_argument("--json", metavar="PATH", help="also write the per-case records")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = cases()
    if args.limit:
        chosen = chosen[: args.limit]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="repair-bench-") as scratch:
        for lookup in (False, True):
            records += run_mode(args.model, lookup, chosen, Path(scratch))
    by_kind = {
        kind: [r for r in records if r["kind"] == kind and r["lookup"]]
        for kind in ("misspelt local", "missing colon", "missing bracket")
    }
    print(
        f"model {args.model}, {len(chosen)} cases from {len(FUNCTIONS)} stdlib functions, "
        f"Python {sys.version.split()[0]}"
    )
    print("\n".join(summary(records)))
    print()
    print("| kind (prompt lookup) | cases | correct |")
    print("|---|--:|--:|")
    for kind, mine in by_kind.items():
        print(f"| {kind} | {len(mine)} | {sum(r['correct'] for r in mine)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
