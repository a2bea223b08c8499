"""Does repository context earn its tokens? Holes in real packages, per prompt variant.

    python -m bench.repo_quality [--packages httpx,click,git,pygls,cattrs,starlette]
        [--holes 150] [--variants in-file,repo,defs,defs-512] [--model NAME] [--limit N]
        [--prompts-only] [--engine ours|llama] [--held-out N]

Holes are punched in real multi-file packages we did not write (installed ones, copied into a
scratch workspace each): a line is cut from a name to its end. Cross-file holes cut at a name
defined at the top level of another module of the package, used as imported (`from .m import
name`, then `name`) or through an imported module (`m.name`); in-file holes cut, in lines that
use no such name, at a call of a function defined in the same file. Every hole is completed
through the real pipeline (`CompletionPipeline`: prompt, engine, post-processing), each request
cold (no KV cache kept), under each variant:

* `in-file`: `--no-context`;
* `repo`: repository context without the cursor (ranked files, outlined);
* `defs`: repository context with the cursor: the definitions the code at the cursor uses
  first, then outlines (`context.definitions`); `defs-N` (`defs-512`, `defs-256`, ...): the
  same with a repository budget of N tokens;
* `sim-N`: `defs-N` with code like the cursor's first (`context.similar`, up to
  `SIMILAR_TOKENS` of the N).

Reported per variant: exact match of the first line (whitespace at the ends ignored) and edit
similarity (difflib ratio) on cross-file and in-file holes; for cross-file holes, recall of the
defining file (a file defining the name is among the prompt's files) and of the definition (its
`def`/`class`/assignment is in the repository part of the prompt); mean prompt tokens and the
ratio to the in-file prompt's; median cold latency. `--engine llama` runs the same prompts,
stop rules and post-processing on llama-cpp-python with the same GGUF (`bench.llama`; the
`bench` extra), its cache emptied before every request. `--prompts-only` builds the same
prompts with the model's tokenizer and no model (a minute or two on 2 cores for three variants,
not an hour): recalls and tokens only. `--held-out 150` with `--holes 300` runs the holes a
default run does not sample: a set on which to check a rule chosen on the default one.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import logging
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import tree_sitter

from bench.llama import LlamaEngine, PromptEngine
from bench.sources import module_path, round_robin
from context import parsing
from context.imports import WorkspaceLayout, extract_imports, python_module_file
from context.index import WorkspaceIndex
from context.prompt import ContextPiece, Prompt, PromptBudget, PromptLayout, TokenCounter
from context.repo import SIMILAR_TOKENS, RepoContext
from lsp_server.completion.pipeline import Completion, CompletionPipeline
from runtime import models
from runtime.client import load_tokenizer
from runtime.engine import Engine, EngineOptions, LocalEngine

logger = logging.getLogger(__name__)

PACKAGES = "httpx,click,git,pygls,cattrs,starlette"
VARIANTS = ("in-file", "repo", "defs", "defs-512")
PER_FILE = 3  # holes of one kind sampled per file at most
_TOP_LEVEL = re.compile(
    r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)|^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=", re.MULTILINE
)


@dataclass(frozen=True)
class Hole:
    """One removed span: the file, where the hole starts and the text that was there."""

    package: str
    path: Path
    text: str  # the file with the span removed
    offset: int
    expected: str
    kind: str  # "cross-file" or "in-file"
    name: str  # the name the hole starts with
    defined_in: tuple[str, ...] = ()  # workspace files defining it at the top level (cross)


# ---------------------------------------------------------------------------------------------
# Holes


def top_level_names(text: str) -> set[str]:
    """Names a Python file defines at the top level (def, class, assignment)."""
    return {a or b for a, b in _TOP_LEVEL.findall(text)}


def find_holes(workspace: Path, package: str) -> list[Hole]:
    """Cross-file and in-file holes in every file of one package workspace."""
    files = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*.py"))
    texts = {rel: (workspace / rel).read_text(encoding="utf-8", errors="replace") for rel in files}
    defines = {rel: top_level_names(text) for rel, text in texts.items()}
    layout = WorkspaceLayout(files)
    holes: list[Hole] = []
    for rel, text in texts.items():
        names, modules = _imported(rel, text, layout, defines)
        holes += _holes_in(workspace, package, rel, text, names, modules, defines)
    return holes


def _imported(
    rel: str, text: str, layout: WorkspaceLayout, defines: dict[str, set[str]]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Names a file imports from other package files that define them (name -> defining
    files), and package modules it imports whole (local name -> file)."""
    names: dict[str, tuple[str, ...]] = {}
    modules: dict[str, str] = {}
    for ref in extract_imports(rel, text):
        if ref.kind != "from":
            continue
        prefix = f"{ref.module}." if ref.module else ""
        for name in ref.names:
            submodule = python_module_file(rel, prefix + name, ref.level, layout)
            if submodule is not None and submodule != rel:
                modules[name] = submodule
                continue
            defining = tuple(sorted(p for p, found in defines.items() if name in found))
            if defining and rel not in defining:
                names[name] = defining
    return names, modules


def _holes_in(
    workspace: Path,
    package: str,
    rel: str,
    text: str,
    names: dict[str, tuple[str, ...]],
    modules: dict[str, str],
    defines: dict[str, set[str]],
) -> list[Hole]:
    """The holes of one file: at most one per line, cross-file where the line allows."""
    cross = _pattern(names)
    through = _pattern(modules, after=r"\.([A-Za-z_]\w*)")
    local = re.compile(r"(?<![\w.])(?:self\.)?([A-Za-z_]\w*)\(")
    own = {m for m in re.findall(r"^\s*(?:async\s+)?def\s+(\w+)", text, re.MULTILINE)}
    holes = []
    position = 0
    body_start = _first_body_line(text)
    tree = parsing.parse(rel, text)
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        code = stripped.lstrip()
        skipped = ("#", "def ", "async def ", "class ", "@")
        if position >= body_start and code and not code.startswith(skipped):
            hole = _cross_hole(stripped, cross, through, names, modules, defines)
            if hole is None and not _uses_any(stripped, cross, through):
                match = next((m for m in local.finditer(stripped) if m.group(1) in own), None)
                hole = (match.start(1), match.group(1), "in-file", ()) if match else None
            if hole is not None:
                start, name, kind, defined_in = hole
                expected = stripped[start:]
                cut = position + start
                if 4 <= len(expected.strip()) <= 80 and _in_code(tree, text, cut):
                    holes.append(
                        Hole(
                            package,
                            workspace / rel,
                            text[:cut] + text[position + len(stripped) :],
                            cut,
                            expected,
                            kind,
                            name,
                            defined_in,
                        )
                    )
        position += len(line)
    return holes


def _in_code(tree: tree_sitter.Tree | None, text: str, offset: int) -> bool:
    """Is character `offset` in code: not in a string, a comment or a signature's parameters?"""
    if tree is None:
        return False
    start = len(text[:offset].encode("utf-8", "surrogatepass"))
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(start, start + 1)
    while node is not None:
        if node.type in ("string", "comment", "parameters"):
            return False
        node = node.parent
    return True


def _pattern(names: Iterable[str], after: str = r"\b") -> re.Pattern[str] | None:
    """A regex matching any of `names` as a whole name (not an attribute), then `after`."""
    alternatives = "|".join(map(re.escape, sorted(names)))
    return re.compile(rf"(?<![\w.])({alternatives}){after}") if alternatives else None


def _uses_any(line: str, *patterns: re.Pattern[str] | None) -> bool:
    return any(p is not None and p.search(line) for p in patterns)


def _cross_hole(
    line: str,
    cross: re.Pattern[str] | None,
    through: re.Pattern[str] | None,
    names: dict[str, tuple[str, ...]],
    modules: dict[str, str],
    defines: dict[str, set[str]],
) -> tuple[int, str, str, tuple[str, ...]] | None:
    """The first cross-file use in a line: (column, name, kind, defining files), or None."""
    found = []
    if cross is not None and (match := cross.search(line)):
        found.append((match.start(1), match.group(1), "cross-file", names[match.group(1)]))
    if through is not None:
        for match in through.finditer(line):
            target = modules[match.group(1)]
            if match.group(2) in defines.get(target, set()):
                found.append((match.start(2), match.group(2), "cross-file", (target,)))
                break
    return min(found) if found else None


def _first_body_line(text: str) -> int:
    """Offset after the import block, so holes are in code, not in imports."""
    last_import = 0
    for match in re.finditer(r"^(from|import) .*$", text, re.MULTILINE):
        last_import = match.end()
    return last_import


def sample(holes: list[Hole], count: int) -> list[Hole]:
    """A deterministic spread: by hash of (file, offset), at most PER_FILE per file."""
    ranked = sorted(
        holes, key=lambda h: hashlib.sha256(f"{h.path.name}:{h.offset}".encode()).hexdigest()
    )
    per_file: dict[Path, int] = {}
    chosen = []
    for hole in ranked:
        if per_file.get(hole.path, 0) < PER_FILE:
            chosen.append(hole)
            per_file[hole.path] = per_file.get(hole.path, 0) + 1
        if len(chosen) == count:
            break
    return chosen


# ---------------------------------------------------------------------------------------------
# Running


class CursorRepoContext(RepoContext):
    """Repository context that passes the bench's cursor to `context_for` while `cursor` is
    set (the `defs` variants) and drops any cursor while it is not (the `repo` variant)."""

    cursor: tuple[str, int] | None = None

    def context_for(
        self,
        current: str,
        count: TokenCounter,
        budget_tokens: int,
        *,
        text: str | None = None,
        offset: int | None = None,
    ) -> list[ContextPiece]:
        """The pieces for the bench's cursor (if set), else for no cursor."""
        if self.cursor is None:
            return super().context_for(current, count, budget_tokens)
        text, offset = self.cursor
        return super().context_for(current, count, budget_tokens, text=text, offset=offset)


def open_workspace(pipeline: CompletionPipeline, root: Path) -> CursorRepoContext:
    """Index `root` into the pipeline's workspaces as a `CursorRepoContext`."""
    index = WorkspaceIndex(root, pipeline.workspaces.rules)
    index.refresh()
    repo = CursorRepoContext(index)
    repo.build()
    pipeline.workspaces._open[root.resolve()] = repo
    return repo


@dataclass(frozen=True)
class Outcome:
    """One hole under one variant."""

    hole: Hole
    variant: str
    answer: str
    tokens: int
    latency_ms: float
    file_recall: bool
    definition_recall: bool

    @property
    def exact(self) -> bool:
        return self.answer.strip() == self.hole.expected.strip()

    @property
    def similarity(self) -> float:
        return difflib.SequenceMatcher(
            None, self.answer.strip(), self.hole.expected.strip()
        ).ratio()


def repo_budget(variant: str) -> int:
    """The repository budget of a variant: `defs-512` / `sim-512` -> 512, else the default."""
    name, _, size = variant.partition("-")
    return int(size) if name in ("defs", "sim") and size else PromptBudget().repo_tokens


def _point_at(
    pipeline: CompletionPipeline, repo: CursorRepoContext, hole: Hole, variant: str
) -> None:
    """Set the pipeline up for one hole under one variant: the cursor, the budget, no memory
    of the last variant's answer at this very cursor."""
    repo.cursor = (hole.text, hole.offset) if variant.startswith(("defs", "sim")) else None
    repo.similar_tokens = SIMILAR_TOKENS if variant.startswith("sim") else 0
    pipeline.budget = replace(pipeline.budget, repo_tokens=repo_budget(variant))
    pipeline.forget()


def run_hole(
    pipeline: CompletionPipeline, repo: CursorRepoContext, hole: Hole, variant: str
) -> Outcome:
    """Complete one hole under one variant through the pipeline."""
    _point_at(pipeline, repo, hole, variant)
    done: Completion = pipeline.complete(
        hole.path,
        hole.text,
        hole.offset,
        workspace=repo.index.root,
        use_context=variant != "in-file",
        max_tokens=48,
    )
    # Single-line holes: the first line is scored.
    return _outcome(hole, variant, done.prompt, done.text.split("\n", 1)[0], done.latency_ms)


def prompt_hole(
    pipeline: CompletionPipeline, repo: CursorRepoContext, hole: Hole, variant: str
) -> Outcome:
    """The prompt of one hole under one variant, as `run_hole` would build it; no answer."""
    _point_at(pipeline, repo, hole, variant)
    prompt = pipeline.prompt(
        hole.path,
        hole.text,
        hole.offset,
        workspace=repo.index.root,
        use_context=variant != "in-file",
    )
    return _outcome(hole, variant, prompt, "", 0.0)


def _outcome(hole: Hole, variant: str, prompt: Prompt, answer: str, latency_ms: float) -> Outcome:
    """An outcome with the recalls of `prompt`'s repository part."""
    repo_part = prompt.text[: prompt.text.rfind("<|file_sep|>")] if len(prompt.files) > 1 else ""
    definition = re.compile(
        rf"^\s*(?:(?:async\s+)?def|class)\s+{re.escape(hole.name)}\b|^{re.escape(hole.name)}\s*[:=]",
        re.MULTILINE,
    )
    return Outcome(
        hole,
        variant,
        answer,
        prompt.tokens,
        latency_ms,
        bool(set(hole.defined_in) & set(prompt.files[:-1])),
        definition.search(repo_part) is not None,
    )


# ---------------------------------------------------------------------------------------------
# Report


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" if values else "-"


HEADERS = (
    "cross EM",
    "cross ES",
    "in-file EM",
    "in-file ES",
    "file recall",
    "def recall",
    "mean tokens",
    "x in-file",
    "median cold ms",
)
# The columns only a generation fills: a prompts-only run leaves them out.
GENERATED = frozenset({"cross EM", "cross ES", "in-file EM", "in-file ES", "median cold ms"})


def report(outcomes: list[Outcome], variants: list[str], generated: bool = True) -> list[str]:
    """The table rows (markdown) per variant; without the `GENERATED` columns unless
    `generated`."""
    baseline = [o.tokens for o in outcomes if o.variant == "in-file"]
    headers = [h for h in HEADERS if generated or h not in GENERATED]
    rows = [
        "| variant | " + " | ".join(headers) + " |",
        "|---|" + "---|" * len(headers),
    ]
    for variant in variants:
        mine = [o for o in outcomes if o.variant == variant]
        cross = [o for o in mine if o.hole.kind == "cross-file"]
        local = [o for o in mine if o.hole.kind == "in-file"]
        tokens = [float(o.tokens) for o in mine]
        cells = {
            "cross EM": _mean([100.0 * o.exact for o in cross]),
            "cross ES": _mean([100 * o.similarity for o in cross]),
            "in-file EM": _mean([100.0 * o.exact for o in local]),
            "in-file ES": _mean([100 * o.similarity for o in local]),
            "file recall": _mean([100.0 * o.file_recall for o in cross]),
            "def recall": _mean([100.0 * o.definition_recall for o in cross]),
            "mean tokens": _mean(tokens),
            "x in-file": (
                f"{statistics.mean(tokens) / statistics.mean(baseline):.2f}"
                if baseline and tokens
                else "-"  # no in-file variant in this run
            ),
            "median cold ms": (
                f"{statistics.median([o.latency_ms for o in mine]) if mine else 0:.0f}"
            ),
        }
        rows.append(f"| {variant} | " + " | ".join(cells[h] for h in headers) + " |")
    return rows


def collect(packages: list[str], scratch: Path, holes: int) -> list[Hole]:
    """Copy each package into its own workspace and sample its holes: two thirds cross-file,
    spread over the packages in turn."""
    cross: list[list[Hole]] = []
    local: list[list[Hole]] = []
    for name in packages:
        workspace = scratch / name
        shutil.copytree(
            module_path(name).parent, workspace / name, ignore=shutil.ignore_patterns("__pycache__")
        )
        found = find_holes(workspace, name)
        cross.append(sample([h for h in found if h.kind == "cross-file"], holes))
        local.append(sample([h for h in found if h.kind == "in-file"], holes))
        print(
            f"{name}: {len(cross[-1])} cross-file, {len(local[-1])} in-file holes sampled "
            f"of {len(found)}",
            file=sys.stderr,
        )
    wanted_cross = -(-2 * holes // 3)
    return round_robin(cross, wanted_cross) + round_robin(local, holes - wanted_cross)


def held_out(holes: list[Hole], tuned: list[Hole]) -> list[Hole]:
    """`holes` but those of `tuned` (the same package file and offset)."""

    def key(hole: Hole) -> tuple[str, str, int]:  # the path from the package's directory on
        return hole.package, hole.path.as_posix().split(f"/{hole.package}/", 1)[1], hole.offset

    seen = {key(hole) for hole in tuned}
    return [hole for hole in holes if key(hole) not in seen]


def _engine(model: str, engine: str, prompts_only: bool) -> Engine:
    """The engine completing the holes, every request cold whatever ran before it."""
    if prompts_only:
        return PromptEngine(load_tokenizer(model))
    if engine == "llama":
        gguf = models.assemble(model, progress=False)
        return LlamaEngine(gguf, load_tokenizer(model), threads=2, cold=True)
    return LocalEngine.load(EngineOptions(model=model, cache_bytes=0), progress=False)


def main(argv: list[str] | None = None) -> int:
    """Run every hole under every variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", default=PACKAGES)
    parser.add_argument("--holes", type=int, default=150)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--limit", type=int, default=0, help="run only the first N holes")
    parser.add_argument(
        "--held-out",
        type=int,
        default=0,
        metavar="N",
        help="leave out the holes a run with --holes N samples (those rules were tuned on)",
    )
    parser.add_argument(
        "--prompts-only",
        action="store_true",
        help="build the prompts without a model: recalls and tokens only",
    )
    parser.add_argument(
        "--engine",
        choices=("ours", "llama"),
        default="ours",
        help="llama: llama-cpp-python on the same GGUF, given the same prompts (the bench extra)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    variants = args.variants.split(",")
    packages = args.packages.split(",")

    scratch = Path(tempfile.mkdtemp(prefix="repo-quality-"))
    holes = collect(packages, scratch, args.holes)
    if args.held_out:
        holes = held_out(holes, collect(packages, scratch / "tuned", args.held_out))
    if args.limit:
        holes = (
            holes[: args.limit // 2]
            + [h for h in holes if h.kind == "in-file"][: args.limit - args.limit // 2]
        )
    pipeline = CompletionPipeline(
        _engine(args.model, args.engine, args.prompts_only),
        warm=False,
        layout=PromptLayout.for_model(args.model),
    )
    repos = {name: open_workspace(pipeline, scratch / name) for name in packages}
    outcomes: list[Outcome] = []
    run = prompt_hole if args.prompts_only else run_hole
    for number, hole in enumerate(holes, 1):
        for variant in variants:
            outcomes.append(run(pipeline, repos[hole.package], hole, variant))
        if args.prompts_only:
            continue
        answers = " ".join(f"{o.variant}={o.answer!r}" for o in outcomes[-len(variants) :])
        print(f"[{number}/{len(holes)}] {hole.kind} {hole.expected!r}: {answers}", file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)

    kinds = {kind: sum(h.kind == kind for h in holes) for kind in ("cross-file", "in-file")}
    engine = "llama.cpp (the same GGUF)" if args.engine == "llama" else "ours"
    print(f"model {args.model} on {engine}, {len(holes)} holes ({kinds}) in {args.packages}")
    print("\n".join(report(outcomes, variants, generated=not args.prompts_only)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
