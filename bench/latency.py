"""Keystroke-to-suggestion latency while typing real code: our pipeline against llama-cpp-python
on the same GGUF and the same prompts.

    python -m bench.latency [--model 0.5b] [--lines 16] [--max-tokens 64] [--pace-ms 150]
        [--no-llama] [--plot docs/latency_cdf.png] [--json out.json]

Typing replay: lines from function bodies of Python files we did not write: pygls 2's sources
(`protocol/json_rpc.py`, `workspace/text_document.py`, `io_.py`, `capabilities.py`,
`workspace/workspace.py`), newer than the models' training data, unlike the standard library,
which the models have seen so often that they recite it (the forward cache then answers most
keystrokes and the benchmark flatters us). For each line, the file
is loaded with that line emptied (its indentation kept), and the line is typed character by
character as a person types: `--pace-ms` per character (150: ~80 words a minute) pass between
one pause's answer and the next pause. An editor asks for a completion once typing pauses;
pauses are taken at word boundaries (the start of the line and after a space or one of
`([{.,:=`), and each pause sends one request and waits for its answer. Latency = from the
request to the final text an editor would show (prompt assembly, generation,
post-processing), the model loaded. The typing time is where our pipeline warms its KV cache
after a forward-cache answer (`lsp_server/completion/warmup.py`); a warm-up still running when
the next request comes delays that request, which is counted. So the sides run one after the other,
each alone on the machine (interleaving them would let one side's background work slow the
other's requests):
- ours: `CompletionPipeline.complete` (in-file prompt; the engine's prefix KV cache, the
  forward cache answering typing the last suggestion predicted, speculation with prompt lookup,
  and for the 1.5B the 0.5B draft model);
- llama.cpp: the prompt our pipeline builds for the same buffer and cursor, as token ids, to
  `Llama.generate` (greedy), which reuses the KV of the longest prefix shared with the previous
  request (its own prompt cache); the same stop tokens, stop rule, healing of the typed end of
  the line (see `context/prompt.py`) and post-processing.

Prints p50 / p95 per side, the ratio of p50s (goal ≤ 0.33) and the 0.5B's p50 (goal ≤ 350 ms),
and cache use; `--plot` draws the latency CDF of both.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.context import percentile
from bench.llama import llama_generate, load_llama
from bench.sources import line_starts, module_path, round_robin
from bench.speculative import MODELS
from context.prompt import PromptLayout
from lsp_server.completion.pipeline import CompletionPipeline, after_heal
from lsp_server.completion.postprocess import CursorContext, postprocess, stop_rule
from runtime import models
from runtime.engine import EngineOptions, LocalEngine
from runtime.generate import GenerationConfig

logger = logging.getLogger("bench.latency")

PAUSE_AFTER = " ([{.,:="
TYPED_MODULES = (
    "pygls.protocol.json_rpc",
    "pygls.workspace.text_document",
    "pygls.io_",
    "pygls.capabilities",
    "pygls.workspace.workspace",
)
GOAL_RATIO = 0.33
GOAL_P50_MS = 350.0


@dataclass(frozen=True)
class TypedLine:
    """A line of a real file to type again: the file, its start offset and its text."""

    path: Path
    text: str  # the whole file
    start: int  # offset of the line's first non-blank character
    content: str  # what gets typed (the line without indentation)

    def buffer(self, typed: int) -> tuple[str, int]:
        """The buffer after typing `typed` characters of the line, and the cursor."""
        end = self.start + len(self.content)
        buffer = self.text[: self.start] + self.content[:typed] + self.text[end:]
        return buffer, self.start + typed

    def pauses(self) -> list[int]:
        """Characters typed at each pause: 0, then at the end of each run of word-boundary
        characters (`x = ` pauses once, after the second space)."""
        content = self.content
        return [0] + [
            index
            for index in range(1, len(content))
            if content[index - 1] in PAUSE_AFTER and content[index] not in PAUSE_AFTER
        ]


def typed_lines(count: int) -> list[TypedLine]:
    """`count` lines spread over the modules: statements in function bodies, 25-90 chars."""
    per_module: list[list[TypedLine]] = []
    for name in TYPED_MODULES:
        path = module_path(name)
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        starts = line_starts(text)
        candidates = []
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef):
                continue
            for statement in node.body[1:]:
                if statement.lineno != statement.end_lineno:
                    continue
                line = lines[statement.lineno - 1]
                content = line.strip()
                if 25 <= len(content) <= 90 and not content.startswith(("#", '"', "'")):
                    start = starts[statement.lineno - 1] + len(line) - len(line.lstrip())
                    candidates.append(TypedLine(path, text, start, content))
        candidates.sort(key=lambda line: line.start)
        step = max(1, len(candidates) // max(1, count))
        per_module.append(candidates[::step])
    return round_robin(per_module, count)


@dataclass
class Sample:
    """One request."""

    side: str
    line: int
    typed: int
    latency_ms: float
    suggestion: str
    how: str  # ours: model | forward_cache | continuation; llama.cpp: model
    prompt_tokens: int
    reused_tokens: int


class LlamaSide:
    """llama-cpp-python on the same GGUF, fed our prompts as token ids."""

    def __init__(self, gguf: Path, pipeline: CompletionPipeline, threads: int) -> None:
        self.llm = load_llama(gguf, threads)
        self.pipeline = pipeline
        self.tokenizer = pipeline.engine.tokenizer  # type: ignore[attr-defined]

    def complete(self, line: TypedLine, typed: int, max_tokens: int) -> Sample:
        """One request, timed like ours: prompt, generation, post-processing."""
        started = time.perf_counter()
        buffer, offset = line.buffer(typed)
        prompt = self.pipeline.prompt(line.path, buffer, offset, use_context=False)
        ids = self.pipeline.engine.encode_prompt(prompt.segments)
        cursor = CursorContext.at(buffer, offset, str(line.path))
        config = GenerationConfig(max_new_tokens=max_tokens, stop_rule=stop_rule(cursor))
        run = llama_generate(self.llm, self.tokenizer, ids, config)
        shown = postprocess(after_heal(run.stream.text, prompt.heal), cursor)
        latency = (time.perf_counter() - started) * 1000
        text = shown.text if shown is not None else ""
        return Sample("llama.cpp", 0, typed, latency, text, "model", len(ids), run.reused)


def ours_complete(
    pipeline: CompletionPipeline, line: TypedLine, typed: int, max_tokens: int
) -> Sample:
    """One request through our pipeline."""
    started = time.perf_counter()
    buffer, offset = line.buffer(typed)
    done = pipeline.complete(line.path, buffer, offset, use_context=False, max_tokens=max_tokens)
    latency = (time.perf_counter() - started) * 1000
    result = done.result
    return Sample(
        "ours",
        0,
        typed,
        latency,
        done.text,
        done.source,
        result.prompt_tokens,
        result.cached_tokens,
    )


def replay(
    side: str, complete: Callable[[TypedLine, int], Sample], lines: list[TypedLine], pace_ms: float
) -> list[Sample]:
    """Type `lines` at `pace_ms` per character, one request per pause, on one side."""
    samples: list[Sample] = []
    for number, line in enumerate(lines):
        previous = 0
        for typed in line.pauses():
            time.sleep((typed - previous) * pace_ms / 1000)
            previous = typed
            sample = complete(line, typed)
            sample.line = number
            samples.append(sample)
        values = [sample.latency_ms for sample in samples if sample.line == number]
        logger.info(
            "%s line %d (%s): p50 %.0f ms", side, number, line.content[:40], percentile(values, 0.5)
        )
    return samples


def run(args: argparse.Namespace) -> list[Sample]:
    """Replay the typing on our side, then on llama.cpp's."""
    model = MODELS[args.model]
    options = EngineOptions(model=model)
    engine = LocalEngine.load(options, progress=True)
    pipeline = CompletionPipeline(engine, layout=PromptLayout.for_model(model))
    lines = typed_lines(args.lines)
    samples = replay(
        "ours",
        lambda line, typed: ours_complete(pipeline, line, typed, args.max_tokens),
        lines,
        args.pace_ms,
    )
    pipeline.warmer.wait()
    logger.info("ours: %d cache warm-ups", pipeline.warmer.started)
    if not args.no_llama:
        llama = LlamaSide(models.assemble(model, progress=False), pipeline, args.threads)
        samples += replay(
            "llama.cpp",
            lambda line, typed: llama.complete(line, typed, args.max_tokens),
            lines,
            args.pace_ms,
        )
    return samples


def paired(samples: list[Sample]) -> list[str]:
    """Medians of both sides over the same requests, by kind of request (markdown rows)."""
    theirs = {(s.line, s.typed): s for s in samples if s.side == "llama.cpp"}
    pairs = [
        (ours, theirs[(ours.line, ours.typed)])
        for ours in samples
        if ours.side == "ours" and (ours.line, ours.typed) in theirs
    ]
    kinds = {
        "all": pairs,
        "those we sent to the model": [p for p in pairs if p[0].how != "forward_cache"],
        "first pause of a line": [p for p in pairs if p[0].typed == 0],
        "later pauses on the line, model calls": [
            p for p in pairs if p[0].typed > 0 and p[0].how != "forward_cache"
        ],
        "later pauses on the line, all": [p for p in pairs if p[0].typed > 0],
    }
    rows = [
        "| requests | n | ours p50 ms | llama.cpp p50 ms | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, chosen in kinds.items():
        if not chosen:
            continue
        ours_p50 = percentile([p[0].latency_ms for p in chosen], 0.5)
        their_p50 = percentile([p[1].latency_ms for p in chosen], 0.5)
        rows.append(
            f"| {kind} | {len(chosen)} | {ours_p50:.0f} | {their_p50:.0f} "
            f"| {ours_p50 / their_p50:.2f}x |"
        )
    return rows


def report(samples: list[Sample], args: argparse.Namespace) -> str:
    """Markdown table, ratio and goals."""
    lines = [
        f"{MODELS[args.model]}, {args.lines} typed lines, "
        f"{sum(s.side == 'ours' for s in samples)} requests per side, up to "
        f"{args.max_tokens} new tokens.",
        "",
        "| side | p50 ms | p95 ms | mean ms | answered by | prompt tokens reused |",
        "|---|---:|---:|---:|---|---:|",
    ]
    p50: dict[str, float] = {}
    groups = {
        "ours": [sample for sample in samples if sample.side == "ours"],
        "ours, model calls only": [
            sample for sample in samples if sample.side == "ours" and sample.how != "forward_cache"
        ],
        "llama.cpp": [sample for sample in samples if sample.side == "llama.cpp"],
    }
    for side, chosen in groups.items():
        if not chosen:
            continue
        values = [sample.latency_ms for sample in chosen]
        p50[side] = percentile(values, 0.5)
        kinds = {
            how: sum(s.how == how for s in chosen) for how in dict.fromkeys(s.how for s in chosen)
        }
        prompt = sum(s.prompt_tokens for s in chosen)
        reused = sum(s.reused_tokens for s in chosen)
        lines.append(
            f"| {side} | {p50[side]:.0f} | {percentile(values, 0.95):.0f} "
            f"| {sum(values) / len(values):.0f} "
            f"| {', '.join(f'{how} {count}' for how, count in kinds.items())} "
            f"| {reused / prompt:.0%} |"
            if prompt
            else f"| {side} | {p50[side]:.0f} | {percentile(values, 0.95):.0f} | - | - | - |"
        )
    lines.append("")
    if "llama.cpp" in p50:
        lines += ["Same requests, paired:", "", *paired(samples), ""]
        ratio = p50["ours"] / p50["llama.cpp"]
        verdict = "PASS" if ratio <= GOAL_RATIO else "FAIL"
        lines.append(f"p50 ours ÷ llama.cpp: {ratio:.2f}x (goal ≤ {GOAL_RATIO}x: {verdict})")
    if args.model == "0.5b":
        verdict = "PASS" if p50["ours"] <= GOAL_P50_MS else "FAIL"
        lines.append(f"p50 ours: {p50['ours']:.0f} ms (goal ≤ {GOAL_P50_MS:.0f} ms: {verdict})")
    return "\n".join(lines)


def plot(samples: list[Sample], args: argparse.Namespace, out: Path) -> None:
    """The latency CDF of both sides as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for side in ("ours", "llama.cpp"):
        values = sorted(sample.latency_ms for sample in samples if sample.side == side)
        if values:
            fractions = [(index + 1) / len(values) for index in range(len(values))]
            axes.step(values, fractions, where="post", label=side)
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlabel("keystroke → suggestion (ms)")
    axes.set_ylabel("fraction of requests")
    axes.set_title(f"Typing replay, {MODELS[args.model]}, 2 CPU cores")
    axes.axvline(GOAL_P50_MS, color="grey", linestyle=":", linewidth=1)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Run the replay and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="0.5b")
    parser.add_argument("--lines", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--pace-ms", type=float, default=150.0, help="typing time per character (ms)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-llama", action="store_true", help="our side only")
    parser.add_argument("--plot", type=Path, help="write the latency CDF here (PNG)")
    parser.add_argument("--json", type=Path, help="write every request here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models.logger.setLevel(logging.WARNING)
    samples = run(args)
    if args.json:
        records: list[dict[str, Any]] = [asdict(sample) for sample in samples]
        args.json.write_text(json.dumps(records, indent=1))
    if args.plot:
        plot(samples, args, args.plot)
    print(report(samples, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
