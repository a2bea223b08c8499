"""Does repository context help? Exact match on holes that call another module's function.

    python -m bench.repo_quality [--packages jinja2,click,git] [--holes 40] [--model NAME]

Holes are punched in real multi-file packages that we did not write (installed ones, copied
into a scratch workspace): in a line that calls a function the file imports from a sibling
module, everything from the function's name to the end of the line is removed. Each hole is
completed twice through the full pipeline (prompt + engine + post-processing): with repository
context and with `--no-context`; exact match compares the completion's first line with the
removed text (whitespace at the ends ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.sources import module_path
from context.imports import WorkspaceLayout, extract_imports, resolve_imports
from context.prompt import PromptLayout
from lsp_server.pipeline import CompletionPipeline
from runtime.engine import EngineOptions, LocalEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hole:
    """One removed span: the file, where the hole starts and the text that was there."""

    path: Path
    text: str  # the file with the span removed
    offset: int
    expected: str


def find_holes(workspace: Path) -> list[Hole]:
    """Every call, in every file, of a function the file imports from a sibling module."""
    files = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*.py"))
    layout = WorkspaceLayout(files)
    holes = []
    for rel in files:
        text = (workspace / rel).read_text(encoding="utf-8", errors="replace")
        defined_elsewhere = set()
        refs = extract_imports(rel, text)
        for ref in refs:
            targets = resolve_imports(rel, [ref], layout)
            for target in targets:
                target_text = (workspace / target).read_text(encoding="utf-8", errors="replace")
                for name in ref.names:
                    if re.search(rf"^\s*def {re.escape(name)}\(", target_text, re.MULTILINE):
                        defined_elsewhere.add(name)
        if not defined_elsewhere:
            continue
        body_start = _first_body_line(text)
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(defined_elsewhere))) + r")\(")
        position = 0
        for line in text.splitlines(keepends=True):
            stripped = line.rstrip("\n")
            match = pattern.search(stripped)
            if position >= body_start and match and not stripped.lstrip().startswith(("#", "def ")):
                start = position + match.start()
                end = position + len(stripped)
                expected = text[start:end]
                if 4 <= len(expected.strip()) <= 80:
                    holes.append(Hole(workspace / rel, text[:start] + text[end:], start, expected))
            position += len(line)
    return holes


def _first_body_line(text: str) -> int:
    """Offset after the import block, so holes are in code, not in imports."""
    last_import = 0
    for match in re.finditer(r"^(from|import) .*$", text, re.MULTILINE):
        last_import = match.end()
    return last_import


def sample(holes: list[Hole], count: int) -> list[Hole]:
    """A deterministic spread: by hash of (file, offset), at most 3 per file."""
    ranked = sorted(
        holes, key=lambda h: hashlib.sha256(f"{h.path}:{h.offset}".encode()).hexdigest()
    )
    per_file: dict[Path, int] = {}
    chosen = []
    for hole in ranked:
        if per_file.get(hole.path, 0) < 3:
            chosen.append(hole)
            per_file[hole.path] = per_file.get(hole.path, 0) + 1
        if len(chosen) == count:
            break
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Run the check and print exact match with and without repository context."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", default="jinja2,click,git")
    parser.add_argument("--holes", type=int, default=40)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    scratch = Path(tempfile.mkdtemp(prefix="repo-quality-"))
    holes: list[Hole] = []
    for name in args.packages.split(","):
        workspace = scratch / name
        shutil.copytree(
            module_path(name).parent, workspace / name, ignore=shutil.ignore_patterns("__pycache__")
        )
        found = find_holes(workspace)
        holes += sample(found, args.holes // len(args.packages.split(",")))
        print(f"{name}: {len(found)} candidate holes", file=sys.stderr)

    engine = LocalEngine.load(EngineOptions(model=args.model), progress=False)
    pipeline = CompletionPipeline(engine, layout=PromptLayout.for_model(args.model))
    scores: dict[str, list[bool]] = {"context": [], "no-context": []}
    answers: dict[str, str] = {}
    latency: dict[str, list[float]] = {"context": [], "no-context": []}
    for number, hole in enumerate(holes, 1):
        workspace = scratch / hole.path.relative_to(scratch).parts[0]
        for mode in ("context", "no-context"):
            done = pipeline.complete(
                hole.path,
                hole.text,
                hole.offset,
                workspace=workspace,
                use_context=mode == "context",
                max_tokens=48,
            )
            # Single-line holes: the first line of the answer is what is scored.
            first_line = done.text.split("\n", 1)[0]
            scores[mode].append(first_line.strip() == hole.expected.strip())
            answers[mode] = done.text
            latency[mode].append(done.latency_ms)
        print(
            f"[{number}/{len(holes)}] {hole.expected!r}: "
            f"context={answers['context']!r} no-context={answers['no-context']!r}",
            file=sys.stderr,
        )
    shutil.rmtree(scratch, ignore_errors=True)

    print(f"model {args.model}, {len(holes)} holes in {args.packages}")
    print("| prompt | exact match | median latency |")
    print("|---|---|---|")
    for mode in ("no-context", "context"):
        rate = 100 * sum(scores[mode]) / max(len(holes), 1)
        print(f"| {mode} | {rate:.1f} % | {statistics.median(latency[mode]):.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
