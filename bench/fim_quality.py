"""Exact match of the first line on the SantaCoder FIM subset (the Qwen2.5-Coder report's
"HumanEval-FIM"), through our completion pipeline: prompt builder + engine + post-processing.

    python -m bench.fim_quality [--models 0.5b,1.5b] [--variants model,editor,literal]
        [--limit K] [--max-tokens 64] [--precision int4] [--json out.json]

Data: `../shared/data/santacoder-fim/subset-240.json` (80 items per language; `--limit K` keeps
the first K per language, which the subset's ordering makes a nested, balanced subset; K above
80 extends it by the same rule over the whole task file) and the rows of
`santacoder-fim-task.jsonl.gz`. Scoring follows the data README (Qwen's rule): take the
generation's first line, or its second line when it starts with "\\n" or " \\n"; `strip()` it and
the reference; exact match. Greedy decoding, in-file prompt only (`use_context=False`).

Each row is a hole of one line cut out of a HumanEval program: `prompt` (the text before, which
usually does not end with a newline) + hole + `suffix`, where the hole is "\\n<line>\\n" in almost
every row. Variants:

- `model`: the model alone. The prompt our builder makes for Qwen's split (prefix = `prompt`,
  suffix = `suffix`), no stop rule of the pipeline: generation ends at Qwen's stop tokens, at
  `--max-tokens`, or once the line the rule scores is complete (which cannot change the score).
  This is the number to compare with the report (base models, bf16).
- `model-editor`: the same, for the prompt of the `editor` buffer (its suffix starts with the
  newline): what the pipeline would score if its stop rule and post-processing never cut the
  scored line.
- `editor`: `CompletionPipeline.complete` on the buffer an editor holds when the hole line is
  deleted (`prompt + "\\n" + suffix` unless one side already has the newline), the cursor at the
  end of the line above. What a user gets who asks for the next line.
- `literal`: `CompletionPipeline.complete` on `prompt + suffix` with the cursor at `len(prompt)`:
  the same FIM prompt as Qwen's, but the buffer joins the line above and the line below, so the
  pipeline sees code after the cursor and stops at the first newline.
- `typing`, `typing-psm`: the cursor inside the hole line after its first space (the rest of
  the line is scored); `typing-psm` keeps Qwen's PSM order instead of leading the middle with
  the typed line.
- `editor-sfx48`, `typing-sfx48`: `editor` and `typing` with prompts holding at most 48 tokens
  of suffix instead of 128 (the `suffixBudget` setting): what a shorter suffix costs.

For the pipeline variants, "post" scores `Completion.text` (what an editor shows) and "raw"
scores `Completion.result.text` (the engine's text: Qwen's stop tokens and the in-generation stop
rule, no `finalize`). Besides EM, "insert" counts suggestions that, accepted as they are, give back
the original program (lines compared without trailing whitespace, blank lines ignored): it fails
when the suggestion runs past the hole, or is indented wrongly.

The markdown report goes to stdout, progress to stderr; `--json` writes every item's outputs.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from context.prompt import PromptBudget, PromptLayout
from lsp_server.completion.pipeline import CompletionPipeline
from runtime.config import PRECISIONS
from runtime.engine import EngineOptions, LocalEngine
from runtime.generate import GenerationConfig
from runtime.models import DEFAULT_PRECISION

logger = logging.getLogger("bench.fim_quality")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "santacoder-fim"
MODELS = {"0.5b": "qwen2.5-coder-0.5b", "1.5b": "qwen2.5-coder-1.5b"}
# The data README's subset rule takes each language in this order.
SUBSET_LANGUAGES = ("py", "js", "java")
VARIANTS = (
    "model",
    "model-editor",
    "editor",
    "editor-sfx48",
    "literal",
    "typing",
    "typing-psm",
    "typing-sfx48",
)
# Variants with the cursor inside the hole line, after its first space: they score the rest of
# that line, and "typing-psm" turns off the typed line leading the middle (context/prompt.py).
TYPING = ("typing", "typing-psm", "typing-sfx48")
# Variants whose prompts hold at most this many suffix tokens (the default's 128 otherwise).
SHORT_SUFFIX = {"editor-sfx48": 48, "typing-sfx48": 48}
MODEL_ONLY = ("model", "model-editor")
LANGUAGES = ("py", "java", "js")
EXTENSIONS = {"py": ".py", "java": ".java", "js": ".js"}
# Rows per language in the full task: the report's "Average" weighs the languages by these.
FULL_COUNTS = {"py": 1043, "java": 1780, "js": 1969}
# Qwen2.5-Coder report (arXiv 2409.12186v3) Table 7: base models, bf16, EM %.
REFERENCE = {
    "0.5b": {"py": 70.3, "java": 78.1, "js": 81.2, "weighted": 77.7},
    "1.5b": {"py": 77.0, "java": 85.6, "js": 85.0, "weighted": 83.5},
}
VARIANT_LABELS = {
    ("model", "raw"): "model alone, Qwen's prompt",
    ("model-editor", "raw"): "model alone, line-deleted prompt",
    ("editor", "post"): "pipeline, line deleted, post-processed",
    ("editor", "raw"): "pipeline, line deleted, raw",
    ("literal", "post"): "pipeline, prompt+suffix buffer, post-processed",
    ("literal", "raw"): "pipeline, prompt+suffix buffer, raw",
    ("typing", "post"): "pipeline, typing the line (after its 1st space), post-processed",
    ("typing", "raw"): "pipeline, typing the line (after its 1st space), raw",
    ("typing-psm", "post"): "same, Qwen's PSM order, post-processed",
    ("typing-psm", "raw"): "same, Qwen's PSM order, raw",
    ("editor-sfx48", "post"): "pipeline, line deleted, 48-token suffix, post-processed",
    ("editor-sfx48", "raw"): "pipeline, line deleted, 48-token suffix, raw",
    ("typing-sfx48", "post"): "typing the line, 48-token suffix, post-processed",
    ("typing-sfx48", "raw"): "typing the line, 48-token suffix, raw",
}


# ---------------------------------------------------------------------------------------------
# Data and scoring


@dataclass(frozen=True)
class FimItem:
    """One row of the task: a single-line hole between `prompt` and `suffix`."""

    id: str  # "<language>/<name>"
    language: str
    prompt: str
    suffix: str
    reference: str  # the hole's line, with its indentation, without newline

    @property
    def path(self) -> Path:
        """A file name with the language's extension (the pipeline only looks at the name)."""
        return Path("sample" + EXTENSIONS[self.language])

    def original(self) -> str:
        """The program the row was cut from (up to blank lines at the hole)."""
        return f"{self.prompt}\n{self.reference}\n{self.suffix}"

    def typing(self) -> FimItem | None:
        """The row as typed up to the first space inside the hole line: the typed part moves to
        the prompt and the rest of the line is the reference; None without such a space."""
        body = self.reference.lstrip()
        indent = len(self.reference) - len(body)
        space = body.find(" ")
        if space < 0 or space + 1 >= len(body.rstrip()):
            return None
        cut = indent + space + 1
        before = self.prompt if self.prompt.endswith("\n") else self.prompt + "\n"
        after = self.suffix if self.suffix.startswith("\n") else "\n" + self.suffix
        return FimItem(
            self.id, self.language, before + self.reference[:cut], after, self.reference[cut:]
        )

    def deleted_line_buffer(self) -> tuple[str, int]:
        """The program without the hole line, and the cursor where the line was."""
        if self.prompt.endswith("\n") or self.suffix.startswith("\n"):
            return self.prompt + self.suffix, len(self.prompt)
        return f"{self.prompt}\n{self.suffix}", len(self.prompt)


def subset_ids(keys: Iterable[str], per_language: int) -> list[str]:
    """The subset rule of the data README, for any size: per language (py, js, java), the
    `per_language` ids ("<language>/<name>") with the smallest sha256 hex digests."""
    by_language: dict[str, list[str]] = {}
    for key in keys:
        by_language.setdefault(key.split("/", 1)[0], []).append(key)
    ids: list[str] = []
    for language in SUBSET_LANGUAGES:
        ordered = sorted(
            by_language.get(language, []), key=lambda k: hashlib.sha256(k.encode()).hexdigest()
        )
        ids += ordered[:per_language]
    return ids


def load_items(data_dir: Path, per_language: int | None = None) -> list[FimItem]:
    """The subset's rows in subset order; with `per_language`, the first that many per language
    (beyond the stored subset's 80, chosen from the whole task file by the same rule)."""
    ids = json.loads((data_dir / "subset-240.json").read_text())["ids"]
    rows: dict[str, FimItem] = {}
    with gzip.open(data_dir / "santacoder-fim-task.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            key = f"{row['language']}/{row['name']}"
            rows[key] = FimItem(
                key, row["language"], row["prompt"], row["suffix"], row["canonical_solution"]
            )
    missing = set(ids) - rows.keys()
    if missing:
        raise SystemExit(f"{len(missing)} subset ids are not in the task file, e.g. {min(missing)}")
    if per_language is not None and per_language > len(ids) // len(SUBSET_LANGUAGES):
        extended = subset_ids(rows, per_language)
        if set(ids) - set(extended):
            raise SystemExit("the subset file does not follow the subset rule")
        ids = extended
    taken: Counter[str] = Counter()
    items: list[FimItem] = []
    for key in ids:
        item = rows[key]
        if per_language is None or taken[item.language] < per_language:
            taken[item.language] += 1
            items.append(item)
    return items


def scored_line(generation: str) -> str:
    """The line Qwen's rule compares: the second line when the generation starts with "\\n" or
    " \\n", else the first; not stripped (callers strip; indentation checks need it)."""
    lines = generation.split("\n")
    if generation.startswith(("\n", " \n")):
        return lines[1]
    return lines[0]


def exact_match(generation: str, reference: str) -> bool:
    """Qwen's EM: the scored line and the reference equal after `strip()`."""
    return scored_line(generation).strip() == reference.strip()


def scored_line_complete(text: str) -> int | None:
    """Stop rule of the `model` variant: the length of `text` (stop, keep all) once the line
    `scored_line` takes is complete, so more tokens could not change the score; else None."""
    if text.startswith(("\n", " \n")):
        return len(text) if text.count("\n") >= 2 else None
    if text in ("", " "):
        return None  # a "\n" may still follow and make the second line the scored one
    return len(text) if "\n" in text else None


def extra_lines(text: str) -> list[str]:
    """Non-blank lines of `text` after the line `scored_line` takes, stripped."""
    start = 2 if text.startswith(("\n", " \n")) else 1
    return [line.strip() for line in text.split("\n")[start:] if line.strip()]


def repeats_suffix(lines: Sequence[str], suffix: str) -> bool:
    """`lines` (stripped) are the first non-blank lines of `suffix`: text the editor has."""
    following = [line.strip() for line in suffix.split("\n") if line.strip()]
    return bool(lines) and following[: len(lines)] == list(lines)


def normalized(program: str) -> list[str]:
    """Lines without trailing whitespace, blank lines dropped."""
    return [line.rstrip() for line in program.split("\n") if line.strip()]


def first_code_line(text: str, last: bool = False) -> str:
    """The first (or last) non-blank line of `text`, stripped; "" when there is none."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return ""
    return lines[-1] if last else lines[0]


SHAPES = (
    "ok",
    "ok, indent differs",
    "empty",
    "repeats the suffix's first line",
    "repeats the prefix's last line",
    "stops early (prefix of the reference)",
    "runs on past the line's end",
    "other line",
)


def failure_shape(generation: str, item: FimItem) -> str:
    """What a scored line looks like: correct (`ok` or `ok, indent differs`) or why not."""
    line = scored_line(generation)
    if line.strip() == item.reference.strip():
        if line.rstrip() != item.reference.rstrip():
            return "ok, indent differs"
        return "ok"
    if not line.strip():
        return "empty"
    if line.strip() == first_code_line(item.suffix):
        return "repeats the suffix's first line"
    if line.strip() == first_code_line(item.prompt, last=True):
        return "repeats the prefix's last line"
    if item.reference.strip().startswith(line.strip()):
        return "stops early (prefix of the reference)"
    if line.strip().startswith(item.reference.strip()):
        return "runs on past the line's end"
    return "other line"


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    """One item under one variant: texts, scores and costs."""

    model: str
    variant: str
    id: str
    language: str
    reference: str
    raw: str  # the engine's text
    post: str | None  # what the pipeline returns for the editor; None for `model`
    em_raw: bool
    em_post: bool | None
    insert_raw: bool | None
    insert_post: bool | None
    finish_reason: str
    generated_tokens: int
    prompt_tokens: int
    cached_tokens: int
    prefix_truncated: bool
    suffix_truncated: bool
    latency_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def inserted_correctly(buffer: str, offset: int, text: str, item: FimItem) -> bool:
    """Accepting `text` at `offset` gives back the original program (see `normalized`)."""
    return normalized(buffer[:offset] + text + buffer[offset:]) == normalized(item.original())


def run_item(
    pipeline: CompletionPipeline, model: str, variant: str, item: FimItem, max_tokens: int
) -> Outcome:
    """One item under `variant` (for TYPING variants, `item` is already `FimItem.typing()`)."""
    if variant in ("editor", "editor-sfx48", "model-editor"):
        buffer, offset = item.deleted_line_buffer()
    else:
        buffer, offset = item.prompt + item.suffix, len(item.prompt)
    if variant in MODEL_ONLY:
        engine = pipeline.engine
        started = time.monotonic()
        prompt = pipeline.prompt(item.path, buffer, offset, use_context=False)
        # Qwen's PSM prompt, whatever our builder would lead the middle with (in-file prompt:
        # the same windows, the cursor's line at the end of the prefix).
        qwen = [
            ("<|fim_prefix|>", True),
            (prompt.prefix, False),
            ("<|fim_suffix|>", True),
            (prompt.suffix, False),
            ("<|fim_middle|>", True),
        ]
        config = GenerationConfig(max_new_tokens=max_tokens, stop_rule=scored_line_complete)
        result = engine.complete(engine.encode_prompt(qwen), config)
        latency = (time.monotonic() - started) * 1000
        post: str | None = None
    else:
        pipeline.layout = PromptLayout.for_model(
            MODELS[model], typed_line_leads=variant != "typing-psm"
        )
        pipeline.budget = PromptBudget(
            suffix_tokens=SHORT_SUFFIX.get(variant, PromptBudget().suffix_tokens)
        )
        done = pipeline.complete(
            item.path, buffer, offset, use_context=False, max_tokens=max_tokens
        )
        prompt, result, latency, post = done.prompt, done.result, done.latency_ms, done.text
    return Outcome(
        model=model,
        variant=variant,
        id=item.id,
        language=item.language,
        reference=item.reference,
        raw=result.text,
        post=post,
        em_raw=exact_match(result.text, item.reference),
        em_post=None if post is None else exact_match(post, item.reference),
        # Not scored for TYPING rows: their reference is the rest of a line, not a hole.
        insert_raw=None
        if post is None or variant in TYPING
        else inserted_correctly(buffer, offset, result.text, item),
        insert_post=None
        if post is None or variant in TYPING
        else inserted_correctly(buffer, offset, post, item),
        finish_reason=result.finish_reason,
        generated_tokens=result.generated_tokens,
        prompt_tokens=result.prompt_tokens,
        cached_tokens=result.cached_tokens,
        prefix_truncated=len(prompt.prefix) < offset,
        suffix_truncated=len(prompt.suffix) < len(buffer) - offset,
        latency_ms=round(latency, 1),
    )


def run_model(
    key: str,
    items: Sequence[FimItem],
    variants: Sequence[str],
    max_tokens: int,
    threads: int,
    precision: str,
    done: Callable[[list[Outcome]], None],
) -> list[Outcome]:
    """All items under each variant for one model, a pass per variant; `done` sees the results
    so far (for saving them)."""
    started = time.monotonic()
    # One KV cache (cache_bytes=0): every request starts cold, whatever ran before it, so that
    # latencies do not depend on the order of items and variants.
    options = EngineOptions(model=MODELS[key], precision=precision, threads=threads, cache_bytes=0)
    engine = LocalEngine.load(options, progress=False)
    logger.info("%s loaded in %.1f s", key, time.monotonic() - started)
    pipeline = CompletionPipeline(engine)
    outcomes: list[Outcome] = []
    for variant in variants:
        started = time.monotonic()
        chosen = items
        if variant in TYPING:
            chosen = [typed for item in items if (typed := item.typing()) is not None]
        for number, item in enumerate(chosen, 1):
            outcome = run_item(pipeline, key, variant, item, max_tokens)
            outcomes.append(outcome)
            logger.info(
                "%s %s %d/%d %s: em raw %d post %s, %s, %d tokens, %.0f ms",
                key,
                variant,
                number,
                len(chosen),
                item.id,
                outcome.em_raw,
                "-" if outcome.em_post is None else int(outcome.em_post),
                outcome.finish_reason,
                outcome.generated_tokens,
                outcome.latency_ms,
            )
        logger.info("%s %s: %.0f s", key, variant, time.monotonic() - started)
        done(outcomes)
    return outcomes


# ---------------------------------------------------------------------------------------------
# Report


def percent(hits: Iterable[bool | None]) -> float | None:
    """Share of true values in %, None when there are none."""
    values = [bool(hit) for hit in hits if hit is not None]
    return 100.0 * sum(values) / len(values) if values else None


def cell(value: float | None, digits: int = 1) -> str:
    """A number for a table, "-" when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def weighted(by_language: dict[str, float | None]) -> float | None:
    """The report's "Average": per-language EM weighted by the full task's row counts."""
    scores = [by_language.get(language) for language in LANGUAGES]
    if any(score is None for score in scores):
        return None
    total = sum(FULL_COUNTS.values())
    return (
        sum(
            (score or 0.0) * FULL_COUNTS[lang]
            for score, lang in zip(scores, LANGUAGES, strict=True)
        )
        / total
    )


def rows_of(outcomes: Sequence[Outcome]) -> list[tuple[str, str, str, list[Outcome]]]:
    """(model, variant, kind, outcomes) for every table row, in report order."""
    rows = []
    for model in dict.fromkeys(outcome.model for outcome in outcomes):
        for variant in VARIANTS:
            chosen = [o for o in outcomes if o.model == model and o.variant == variant]
            if not chosen:
                continue
            kinds = ("raw",) if variant in MODEL_ONLY else ("post", "raw")
            rows += [(model, variant, kind, chosen) for kind in kinds]
    return rows


def em_of(outcome: Outcome, kind: str) -> bool:
    """The outcome's EM for "post" or "raw"."""
    return bool(outcome.em_post if kind == "post" else outcome.em_raw)


def text_of(outcome: Outcome, kind: str) -> str:
    """The outcome's text for "post" or "raw"."""
    return (outcome.post or "") if kind == "post" else outcome.raw


def report(outcomes: Sequence[Outcome], items: Sequence[FimItem], max_tokens: int) -> str:
    """Markdown: the EM table with the report's numbers, then failure shapes."""
    counts = Counter(item.language for item in items)
    sizes = ", ".join(f"{language} {counts[language]}" for language in LANGUAGES)
    out = [
        f"EM % (Qwen's rule) on {len(items)} items ({sizes}); greedy, max {max_tokens} new "
        'tokens, in-file prompt. "weighted" weighs the languages like the report\'s Average '
        '(1043/1780/1969 rows); "insert" = the suggestion accepted as-is restores the program; '
        "latency = median per request (model alone: stops once the scored line is complete).",
        "",
        "| model | variant | py | java | js | all | weighted | insert | latency ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, variant, kind, chosen in rows_of(outcomes):
        by_language = {
            language: percent(em_of(o, kind) for o in chosen if o.language == language)
            for language in LANGUAGES
        }
        insert = percent((o.insert_post if kind == "post" else o.insert_raw) for o in chosen)
        latency = statistics.median(o.latency_ms for o in chosen)
        out.append(
            f"| {model} Instruct Q4 (ours) | {VARIANT_LABELS[variant, kind]} | "
            + " | ".join(cell(by_language[language]) for language in LANGUAGES)
            + f" | {cell(percent(em_of(o, kind) for o in chosen))}"
            + f" | {cell(weighted(by_language))} | {cell(insert)} | {latency:.0f} |"
        )
    typing = [o for o in outcomes if o.variant in TYPING]
    if typing:
        first = typing[0]
        count = sum(o.model == first.model and o.variant == first.variant for o in typing)
        out.insert(
            1,
            f"Typing rows: the {count} items whose hole line has a space inside; "
            "the cursor after that space, the rest of the line scored.",
        )
    for model in dict.fromkeys(outcome.model for outcome in outcomes):
        ref = REFERENCE[model]
        out.append(
            f"| {model} base bf16 (Qwen report, all 4792 rows) | model alone | "
            + " | ".join(f"{ref[language]:.1f}" for language in LANGUAGES)
            + f" | - | {ref['weighted']:.1f} | - | - |"
        )
    out += ["", "Shapes of the scored line (items):", ""]
    by_id = {item.id: item for item in items}
    table: list[tuple[str, str, Counter[str], str]] = []
    for model, variant, kind, chosen in rows_of(outcomes):
        if variant in TYPING:
            continue  # shapes describe whole hole lines
        found = Counter(failure_shape(text_of(o, kind), by_id[o.id]) for o in chosen)
        overruns = [
            (o, extra_lines(text_of(o, kind)))
            for o in chosen
            if em_of(o, kind) and extra_lines(text_of(o, kind))
        ]
        echoes = sum(repeats_suffix(lines, by_id[o.id].suffix) for o, lines in overruns)
        tail = f"{len(overruns)} | {echoes}" if variant not in MODEL_ONLY else "- | -"
        table.append((model, VARIANT_LABELS[variant, kind], found, tail))
    # Only the shapes that occur.
    shapes = [shape for shape in SHAPES if any(found[shape] for _, _, found, _ in table)]
    out += [
        "| model | variant | "
        + " | ".join(shapes)
        + " | EM, more lines | of which = the suffix's next lines |",
        "|---|---|" + "---:|" * (len(shapes) + 2),
    ]
    for model, label, found, tail in table:
        out.append(
            f"| {model} | {label} | "
            + " | ".join(str(found[shape]) for shape in shapes)
            + f" | {tail} |"
        )
    truncated = Counter(
        (o.prefix_truncated, o.suffix_truncated) for o in outcomes if o.variant not in MODEL_ONLY
    )
    cut = {side: sum(n for key, n in truncated.items() if key[i]) for i, side in enumerate("ps")}
    if cut["p"] or cut["s"]:
        out += [
            "",
            f"Prompt windows cut the prefix in {cut['p']} and the suffix in {cut['s']} of "
            f"{sum(truncated.values())} pipeline requests.",
        ]
    return "\n".join(out)


def git_commit() -> str:
    """HEAD of the repository and whether the tree has changes (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + (" (uncommitted changes)" if dirty else "")


def source_digests() -> dict[str, str]:
    """Short sha256 of the pipeline's source files: which post-processing a run measured, also
    when the tree has uncommitted changes."""
    names = (
        "lsp_server/completion/pipeline.py",
        "lsp_server/completion/postprocess.py",
        "context/prompt.py",
    )
    return {
        name: hashlib.sha256((REPO_ROOT / name).read_bytes()).hexdigest()[:12]
        for name in names
        if (REPO_ROOT / name).exists()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="0.5b,1.5b", help="comma list of: 0.5b, 1.5b")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="first K items per language (above 80: the subset rule over the whole task file)",
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: automatic)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION, help="default: %(default)s"
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="santacoder-fim folder")
    parser.add_argument("--json", type=Path, default=None, help="write per-item results here")
    parser.add_argument(
        "--from-json",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="run nothing: report on saved results (repeatable; a later file replaces the "
        "(model, variant) results of earlier ones)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("runtime").setLevel(logging.WARNING)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [m for m in models if m not in MODELS] + [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown model or variant: {', '.join(unknown)}")
    if args.from_json:
        return report_saved(args.from_json, args.data, args.max_tokens, args.json)
    items = load_items(args.data, args.limit)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "sources": source_digests(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "items": len(items),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "precision": args.precision,
    }
    finished: list[Outcome] = []

    def save(model_outcomes: list[Outcome]) -> None:
        if args.json is not None:
            payload = {"meta": meta, "outcomes": [asdict(o) for o in finished + model_outcomes]}
            args.json.write_text(json.dumps(payload, indent=1))

    for key in models:
        finished += run_model(
            key, items, variants, args.max_tokens, args.threads, args.precision, save
        )
    save([])
    print(report(finished, items, args.max_tokens))
    print("\n" + describe_run(meta))
    return 0


def describe_run(meta: dict[str, Any]) -> str:
    """One line naming a run: when, which code, which machine."""
    sources = ", ".join(f"{name} {digest}" for name, digest in meta.get("sources", {}).items())
    # The table says "Q4" for the shipped GGUFs; the ONNX weights are this precision.
    precision = meta.get("precision", DEFAULT_PRECISION)
    return (
        f"{meta['date']}, commit {meta['commit']} ({sources}), {meta['machine']}, "
        f"ONNX weights {precision}."
    )


def report_saved(paths: Sequence[Path], data_dir: Path, max_tokens: int, out: Path | None) -> int:
    """The report over saved `--json` files; later files replace earlier (model, variant)s."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    runs: list[dict[str, Any]] = []
    for path in paths:
        payload = json.loads(path.read_text())
        fresh: dict[tuple[str, str], list[Outcome]] = {}
        for row in payload["outcomes"]:
            outcome = Outcome(**row)
            fresh.setdefault((outcome.model, outcome.variant), []).append(outcome)
        groups.update(fresh)
        meta = payload["meta"]
        runs.append(meta | {"file": str(path), "groups": sorted(map(list, fresh))})
    outcomes = [outcome for group in groups.values() for outcome in group]
    ids = {outcome.id for outcome in outcomes}
    items = [item for item in load_items(data_dir) if item.id in ids]
    print(report(outcomes, items, max_tokens))
    for meta in runs:
        variants = "; ".join(" ".join(group) for group in meta["groups"])
        print(f"\n{meta['file']} ({variants}): {describe_run(meta)}")
    if out is not None:
        payload = {"runs": runs, "outcomes": [asdict(outcome) for outcome in outcomes]}
        out.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
