"""Side-by-side speed of our engine, llama-cpp-python and transformers+torch on the same prompts.

    python -m bench.runtime [--models 0.5b,1.5b] [--runtimes ours,llama.cpp,transformers]
        [--prompt-tokens 1000] [--decode-tokens 64] [--json out.json]

The parent process builds one workload per model (token ids of real Python code, the same ids for
every runtime), then runs each runtime in its own child process (`--worker RUNTIME MODEL`), one at
a time, so that peak RSS is per runtime and memory does not pile up. It collects the children's
JSON and prints a markdown table and the ratios against the project's goals to stdout; logs go to
stderr.

Per runtime and model it measures: load time (ours: with the ONNX cache already prepared),
cold prefill (prompt in, first token out, nothing cached), greedy decode speed, a warm "one more
keystroke" request (the prompt plus a few more characters of the file: time to the first new
token, reusing the cached prefix where the runtime can), peak RSS, and the leading greedy tokens,
compared between runtimes as a sanity check of our int4 requantization.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("bench.runtime")

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = {"0.5b": "qwen2.5-coder-0.5b", "1.5b": "qwen2.5-coder-1.5b"}
RUNTIMES = ("ours", "llama.cpp", "transformers")
RUNTIME_LABELS = {
    "ours": "ours (ONNX Runtime, {precision})",
    "llama.cpp": "llama.cpp (GGUF Q4_K_M)",
    "transformers": "transformers + torch (fp32)",
}
# Python modules a runtime needs; when one is missing the runtime is reported "not installed".
REQUIRED_MODULES = {
    "ours": ("onnxruntime", "runtime"),
    "llama.cpp": ("llama_cpp",),
    "transformers": ("transformers", "torch", "gguf"),
}
DISTRIBUTIONS = ("coder-lsp", "onnxruntime", "llama_cpp_python", "transformers", "torch")
GOAL_PREFILL = 2.0  # ours / llama.cpp, prefill tokens per second
GOAL_DECODE = 1.5  # ours / llama.cpp, decode tokens per second
GOAL_LOAD_S = 3.0  # our warm load, seconds
COMPARED_TOKENS = 16  # leading greedy tokens compared between runtimes
WARMUP_TEXT = "def add(a, b):\n    return"
WARMUP_TOKENS = 4
# Other processes' share of the CPU above which a measurement is flagged as disturbed.
BACKGROUND_LIMIT = 0.05
# A full recompute per keystroke takes as long as a cold prefill: one is enough to show it.
KEYSTROKES_WITHOUT_REUSE = 1


# ---------------------------------------------------------------------------------------------
# The workload: the same token ids for every runtime


@dataclass
class Workload:
    """What every runtime runs for one model; written to a JSON file for the child processes."""

    model: str
    gguf: str
    precision: str
    threads: int
    decode_tokens: int
    warmup: list[int]
    prompts: list[list[int]]  # cold prompts, each with its own first token: nothing is reusable
    keystrokes: list[list[int]]  # after the last prompt: a few more tokens of the file each time
    llama_api: str = "eval"  # eval: Llama.eval + argmax; generate: Llama.generate

    def save(self, path: Path) -> None:
        """Write the workload as JSON."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Workload:
        """Read a workload written by `save`."""
        return cls(**json.loads(path.read_text()))


def source_text() -> str:
    """Real Python code for the prompts: the standard library's `textwrap` module."""
    return inspect.getsource(textwrap)


def build_workload(
    model: str,
    gguf: Path,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    args: argparse.Namespace,
) -> Workload:
    """Token ids of the prompts and keystrokes for `model`, tokenized once for all runtimes.

    Prompt r is the first `prompt_tokens` tokens of `"\\n" * (r + 1)` + `textwrap.py` (the
    blank lines give every repeat a different first token, so no cache can serve it). Each
    keystroke prompt is the last prompt's text plus the next `keystroke_tokens` tokens of the
    file, re-tokenized as an editor would send it.
    """
    source = source_text()
    prompts: list[list[int]] = []
    full: list[int] = []
    for repeat in range(args.repeats):
        full = encode("\n" * (repeat + 1) + source)
        if len(full) < args.prompt_tokens + args.keystrokes * args.keystroke_tokens:
            raise SystemExit(f"textwrap.py has only {len(full)} tokens; ask for fewer")
        prompts.append(encode(decode(full[: args.prompt_tokens])))
    if len({prompt[0] for prompt in prompts}) != len(prompts):
        raise SystemExit("the prompt variants do not start with different tokens")
    keystrokes = [
        encode(decode(full[: args.prompt_tokens + typed * args.keystroke_tokens]))
        for typed in range(1, args.keystrokes + 1)
    ]
    return Workload(
        model=model,
        gguf=str(gguf),
        precision=args.precision,
        threads=args.threads,
        decode_tokens=args.decode_tokens,
        warmup=encode(WARMUP_TEXT),
        prompts=prompts,
        keystrokes=keystrokes,
        llama_api=args.llama_api,
    )


# ---------------------------------------------------------------------------------------------
# The runtimes (each used only inside its own worker process)


@dataclass
class Generation:
    """One greedy request: its tokens and where the time went."""

    tokens: list[int]
    prefill_s: float  # request in -> first new token out
    decode_s: float  # first new token out -> last token out
    decode_steps: int  # forward passes of one token timed in decode_s
    cached_tokens: int  # prompt tokens served from a cache (0 for a cold prompt)


class Backend(Protocol):
    """One runtime with a model loaded."""

    reuses_prefix: bool  # whether a new request reuses the KV cache of the shared prefix

    def generate(self, ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy continuation of `ids`."""
        ...

    def first_token(self, ids: list[int]) -> tuple[float, int]:
        """Seconds to the first new token after `ids`, and how many prompt tokens were run."""
        ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


class OursBackend:
    """Our engine: `LocalEngine.complete`, which reuses the longest cached prefix by itself."""

    reuses_prefix = True

    def __init__(self, workload: Workload) -> None:
        from runtime.engine import EngineOptions, LocalEngine

        # The runtime itself: no speculation, one-row decode steps (the engine's defaults add
        # both; bench/speculative.py measures them).
        options = EngineOptions(
            model=workload.model,
            precision=workload.precision,
            threads=workload.threads,
            consistent_numerics=False,
        ).without_speculation()
        self.engine = LocalEngine.load(options, progress=False)

    def generate(self, ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy continuation of `ids` through `LocalEngine.complete`."""
        from runtime.generate import GenerationConfig

        started = time.perf_counter()
        result = self.engine.complete(ids, GenerationConfig(max_new_tokens=max_new_tokens))
        wall = time.perf_counter() - started
        decode_s = result.decode_ms / 1000
        # The last token is fed back to the model only when a stop token (not the limit) ended it.
        steps = len(result.token_ids) - (1 if result.finish_reason == "length" else 0)
        if result.finish_reason != "length":
            logger.warning("ours stopped after %d tokens (%s)", steps, result.finish_reason)
        return Generation(result.token_ids, wall - decode_s, decode_s, steps, result.cached_tokens)

    def first_token(self, ids: list[int]) -> tuple[float, int]:
        """Time of a one-token request; the engine reuses what its cache shares with `ids`."""
        from runtime.generate import GenerationConfig

        started = time.perf_counter()
        result = self.engine.complete(ids, GenerationConfig(max_new_tokens=1))
        return time.perf_counter() - started, len(ids) - result.cached_tokens


class LlamaCppBackend:
    """llama-cpp-python at its fastest from Python: `Llama.eval` of the new tokens and an argmax
    of the last logits (`Llama.generate` minus its sampler chain, which costs a few ms per token).

    Like `Llama.generate`, a request keeps the KV cache of the longest prefix it shares with what
    was evaluated before: truncate to that prefix, evaluate the rest. With `--llama-api generate`
    `Llama.generate` itself runs (greedy sampler, default `reset=True`, its own prefix reuse).
    """

    reuses_prefix = True

    def __init__(self, workload: Workload) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=workload.gguf,
            n_ctx=4096,
            n_threads=workload.threads,
            n_threads_batch=workload.threads,
            n_batch=512,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.use_generate = workload.llama_api == "generate"

    def _reused(self, ids: list[int]) -> int:
        # What `generate` keeps: the shared prefix, less one token when all of `ids` is cached
        # (it re-runs one position to get fresh logits).
        shared = common_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), ids)
        return shared - 1 if shared == len(ids) else shared

    def _eval_argmax(self, tokens: list[int]) -> int:
        import llama_cpp
        import numpy as np

        self.llm.eval(tokens)  # drops cached positions from n_tokens on, then evaluates
        pointer = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).argmax())

    def _first(self, ids: list[int]) -> Generator[int, None, None]:
        """Tokens after `ids`, the first one after evaluating the uncached part of `ids`."""
        if self.use_generate:
            yield from self.llm.generate(ids, temp=0.0, repeat_penalty=1.0)
            return
        reused = self._reused(ids)
        self.llm.n_tokens = reused
        token = self._eval_argmax(ids[reused:])
        while True:
            yield token
            token = self._eval_argmax([token])

    def generate(self, ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy continuation of `ids`; stop tokens do not end it, so it always runs the limit."""
        reused = self._reused(ids)
        stream = self._first(ids)
        started = time.perf_counter()
        tokens = [next(stream)]
        first = time.perf_counter()
        while len(tokens) < max_new_tokens:
            tokens.append(next(stream))
        done = time.perf_counter()
        stream.close()
        return Generation(tokens, first - started, done - first, len(tokens) - 1, reused)

    def first_token(self, ids: list[int]) -> tuple[float, int]:
        """Time to the first token of a new request after `ids`, reusing the shared prefix."""
        reused = self._reused(ids)
        stream = self._first(ids)
        started = time.perf_counter()
        next(stream)
        elapsed = time.perf_counter() - started
        stream.close()
        return elapsed, len(ids) - reused


class TransformersBackend:
    """transformers + torch on the GGUF dequantized to fp32; a plain greedy loop over a
    DynamicCache, logits of the last position only. No cache is kept between requests."""

    reuses_prefix = False

    def __init__(self, workload: Workload) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(workload.threads)
        gguf = Path(workload.gguf)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        self.model.eval()

    def _step(self, ids: list[int], past: Any) -> tuple[int, Any]:
        output = self.model(
            input_ids=self.torch.tensor([ids]),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        return int(output.logits[0, -1].argmax()), output.past_key_values

    def generate(self, ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy continuation of `ids` from an empty cache."""
        with self.torch.inference_mode():
            started = time.perf_counter()
            token, past = self._step(ids, None)
            first = time.perf_counter()
            tokens = [token]
            while len(tokens) < max_new_tokens:
                token, past = self._step([token], past)
                tokens.append(token)
            done = time.perf_counter()
        return Generation(tokens, first - started, done - first, len(tokens) - 1, 0)

    def first_token(self, ids: list[int]) -> tuple[float, int]:
        """Time to the first token after `ids`, recomputing the whole prompt."""
        with self.torch.inference_mode():
            started = time.perf_counter()
            self._step(ids, None)
            return time.perf_counter() - started, len(ids)


BACKENDS: dict[str, Callable[[Workload], Backend]] = {
    "ours": OursBackend,
    "llama.cpp": LlamaCppBackend,
    "transformers": TransformersBackend,
}


# ---------------------------------------------------------------------------------------------
# Worker side: measure one runtime on one model


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (the peak if psutil is missing)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return peak_rss_mb()
    return float(psutil.Process().memory_info().rss) / 2**20


def warm_page_cache(workload: Workload) -> None:
    """Read the model files once so that every runtime loads them from memory, not disk."""
    from runtime import models

    prepared = models.prepare(workload.model, workload.precision, progress=False)
    files = [Path(workload.gguf), *sorted(prepared.directory.iterdir())]
    for path in files:
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass
    logger.info("prepared %s; read %d files into the page cache", workload.model, len(files))


def measure(runtime: str, workload: Workload) -> dict[str, Any]:
    """Load `runtime`, warm it up, run the cold prompts and the keystrokes; returns the record."""
    started = time.perf_counter()
    backend = BACKENDS[runtime](workload)
    load_s = time.perf_counter() - started
    rss_loaded = current_rss_mb()
    logger.info("%s %s: loaded in %.2f s, RSS %.0f MB", runtime, workload.model, load_s, rss_loaded)
    backend.generate(workload.warmup, WARMUP_TOKENS)
    runs = []
    for prompt in workload.prompts:
        run = backend.generate(prompt, workload.decode_tokens)
        logger.info(
            "%s: prompt %d tokens (%d cached): prefill %.0f ms, %d tokens, decode %.1f tok/s",
            runtime,
            len(prompt),
            run.cached_tokens,
            run.prefill_s * 1000,
            len(run.tokens),
            run.decode_steps / run.decode_s if run.decode_s else 0.0,
        )
        runs.append(run)
    keystrokes = workload.keystrokes
    if not backend.reuses_prefix:
        keystrokes = keystrokes[:KEYSTROKES_WITHOUT_REUSE]
    typed = [backend.first_token(ids) for ids in keystrokes]
    for (seconds, recomputed), ids in zip(typed, keystrokes, strict=True):
        logger.info(
            "%s: keystroke, %d tokens (%d run): %.0f ms",
            runtime,
            len(ids),
            recomputed,
            seconds * 1000,
        )
    return {
        "runtime": runtime,
        "model": workload.model,
        "status": "ok",
        "load_s": load_s,
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
        "prompt_tokens": [len(prompt) for prompt in workload.prompts],
        "cached_tokens": [run.cached_tokens for run in runs],
        "prefill_ms": [run.prefill_s * 1000 for run in runs],
        "prefill_tok_s": [
            len(p) / r.prefill_s for p, r in zip(workload.prompts, runs, strict=True)
        ],
        "decode_tokens": [len(run.tokens) for run in runs],
        "decode_tok_s": [run.decode_steps / run.decode_s if run.decode_s else 0.0 for run in runs],
        "tokens": [run.tokens for run in runs],
        "keystroke_ms": [seconds * 1000 for seconds, _ in typed],
        "keystroke_recomputed": [recomputed for _, recomputed in typed],
        "keystroke_reuses_prefix": backend.reuses_prefix,
    }


def worker_main(args: argparse.Namespace) -> int:
    """Child process: run one runtime (or `prepare`) on one model; the record goes to --out."""
    runtime, model = args.worker
    workload = Workload.load(Path(args.workload))
    if workload.model != model:
        raise SystemExit(f"workload is for {workload.model}, not {model}")
    try:
        if runtime == "prepare":
            warm_page_cache(workload)
            record: dict[str, Any] = {"runtime": runtime, "model": model, "status": "ok"}
        else:
            record = measure(runtime, workload)
    except Exception as error:
        logger.exception("%s on %s failed", runtime, model)
        record = {"runtime": runtime, "model": model, "status": f"error: {error}"}
    Path(args.out).write_text(json.dumps(record))
    return 0 if record["status"] == "ok" else 1


# ---------------------------------------------------------------------------------------------
# Parent side: workloads, child processes, the report


def is_installed(runtime: str) -> bool:
    """Whether every module `runtime` needs can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED_MODULES[runtime])


def versions() -> dict[str, str | None]:
    """Installed versions of the packages being compared."""
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


@dataclass(frozen=True)
class CpuSample:
    """Machine-wide CPU seconds from /proc/stat, and what this process and its children used."""

    busy_s: float  # all cores: user, nice, system, irq, softirq
    steal_s: float  # taken by the hypervisor for other guests
    own_s: float  # this process and its finished children
    wall_s: float


def cpu_sample() -> CpuSample | None:
    """The machine's CPU counters now (None where /proc/stat does not exist)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    busy = (user + nice + system + irq + softirq) / hz
    return CpuSample(busy, steal / hz, own, time.monotonic())


def background_cpu(before: CpuSample | None, after: CpuSample | None) -> dict[str, float]:
    """Shares of the machine's CPU (0..1) that other processes and the hypervisor took."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return {}
    capacity = (after.wall_s - before.wall_s) * (os.cpu_count() or 1)
    other = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return {
        "background_cpu": max(other, 0.0) / capacity,
        "steal": (after.steal_s - before.steal_s) / capacity,
    }


def run_child(
    runtime: str, workload_path: Path, model: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Run `--worker runtime model` in a fresh interpreter; its stderr passes through."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "record.json"
        command = [
            sys.executable,
            "-m",
            "bench.runtime",
            "--worker",
            runtime,
            model,
            "--workload",
            str(workload_path),
            "--out",
            str(out),
            "--log-level",
            args.log_level,
        ]
        logger.info("running %s on %s", runtime, model)
        before = cpu_sample()
        try:
            completed = subprocess.run(command, cwd=REPO_ROOT, timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            return {
                "runtime": runtime,
                "model": model,
                "status": f"error: timeout {args.timeout} s",
            }
        record: dict[str, Any] = {
            "runtime": runtime,
            "model": model,
            "status": f"error: exit {completed.returncode}",
        }
        if out.exists():
            record = json.loads(out.read_text())
        record.update(background_cpu(before, cpu_sample()))
        if record.get("background_cpu", 0.0) > BACKGROUND_LIMIT:
            logger.warning(
                "other processes used %.0f%% of the CPU while %s ran: its numbers are disturbed",
                100 * record["background_cpu"],
                runtime,
            )
        return record


def model_workload(alias: str, args: argparse.Namespace, directory: Path) -> Path:
    """Assemble `alias`'s GGUF, tokenize the workload with its tokenizer and save it."""
    from runtime import models
    from runtime.tokenizer import QwenTokenizer

    model = MODELS[alias]
    gguf = models.assemble(model, progress=False)
    tokenizer = QwenTokenizer.from_gguf(gguf)
    workload = build_workload(model, gguf, tokenizer.encode, tokenizer.decode, args)
    path = directory / f"{alias}.json"
    workload.save(path)
    return path


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every selected runtime on every selected model, one child process at a time."""
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-workloads-") as tmp:
        for alias in args.models:
            model = MODELS[alias]
            workload = model_workload(alias, args, Path(tmp))
            if "ours" in args.runtimes and is_installed("ours"):
                # Untimed: convert on the first run, and read the files into the page cache.
                prepared = run_child("prepare", workload, model, args)
                if prepared["status"] != "ok":
                    logger.error("preparing %s failed: %s", model, prepared["status"])
            for runtime in args.runtimes:
                if not is_installed(runtime):
                    records.append({"runtime": runtime, "model": model, "status": "not installed"})
                    continue
                records.append(run_child(runtime, workload, model, args))
    return records


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def summarize(record: dict[str, Any]) -> dict[str, float]:
    """Medians over the repeats of one runtime's record."""
    return {
        "load_s": record["load_s"],
        "prefill_ms": median(record["prefill_ms"]),
        "prefill_tok_s": median(record["prefill_tok_s"]),
        "decode_tok_s": median(record["decode_tok_s"]),
        "decode_tokens": min(record["decode_tokens"]),
        "keystroke_ms": median(record["keystroke_ms"]),
        "keystroke_recomputed": median(record["keystroke_recomputed"]),
        "peak_rss_mb": record["peak_rss_mb"],
    }


def matching_lead(a: Sequence[int], b: Sequence[int]) -> str:
    """How many leading greedy tokens agree, out of how many compared ("15/16")."""
    compared = min(COMPARED_TOKENS, len(a), len(b))
    return f"{common_prefix(a[:compared], b[:compared])}/{compared}"


def records_by_runtime(records: list[dict[str, Any]], model: str) -> dict[str, dict[str, Any]]:
    """The records of `model`, keyed by runtime."""
    return {record["runtime"]: record for record in records if record["model"] == model}


def results_table(records: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Markdown rows: one per model and runtime."""
    lines = [
        "| model | runtime | load s | prefill ms | prefill tok/s | decode tok/s (tokens) | "
        f"keystroke ms (tokens run) | peak RSS MB | first {COMPARED_TOKENS} tokens = ours | "
        "other CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for alias in args.models:
        by_runtime = records_by_runtime(records, MODELS[alias])
        ours = by_runtime.get("ours", {})
        for runtime in args.runtimes:
            record = by_runtime[runtime]
            label = RUNTIME_LABELS[runtime].format(precision=args.precision)
            if record["status"] != "ok":
                lines.append(
                    f"| {alias.upper()} | {label} | {record['status']} |  |  |  |  |  |  |  |"
                )
                continue
            s = summarize(record)
            same = "—"
            if runtime != "ours" and ours.get("status") == "ok":
                same = matching_lead(ours["tokens"][0], record["tokens"][0])
            keystroke = f"{s['keystroke_ms']:,.0f} ({s['keystroke_recomputed']:.0f})"
            if not record["keystroke_reuses_prefix"]:
                keystroke += " full recompute"
            lines.append(
                f"| {alias.upper()} | {label} | {s['load_s']:.2f} | {s['prefill_ms']:,.0f} | "
                f"{s['prefill_tok_s']:,.0f} | {s['decode_tok_s']:.1f} ({s['decode_tokens']:.0f}) | "
                f"{keystroke} | {s['peak_rss_mb']:,.0f} | {same} | {background_cell(record)} |"
            )
    return lines


def background_cell(record: dict[str, Any]) -> str:
    """Other processes' share of the CPU during a run, flagged when it disturbed the numbers."""
    share = record.get("background_cpu")
    if share is None:
        return "?"
    return f"{100 * share:.0f}%" + (" (disturbed)" if share > BACKGROUND_LIMIT else "")


@dataclass(frozen=True)
class Metric:
    """One compared quantity and how to print it."""

    key: str
    title: str
    fmt: str


METRICS = (
    Metric("prefill_tok_s", "prefill tok/s", "{:,.0f}"),
    Metric("decode_tok_s", "decode tok/s", "{:.1f}"),
    Metric("load_s", "load s", "{:.2f}"),
    Metric("keystroke_ms", "keystroke ms", "{:,.0f}"),
    Metric("peak_rss_mb", "peak RSS MB", "{:,.0f}"),
)


def format_ratio(ratio: float | None) -> str:
    """A ratio with enough digits that rounding never hides a goal's verdict (1.998x, not 2.00x)."""
    if ratio is None:
        return "—"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.3f}x"


def goal_verdict(metric: Metric, ours: float, llama_ratio: float | None) -> tuple[str, str]:
    """The goal for `metric` and PASS/FAIL, or empty strings when it has no goal."""
    if metric.key == "prefill_tok_s" and llama_ratio is not None:
        return f"≥ {GOAL_PREFILL:g}x llama.cpp", "PASS" if llama_ratio >= GOAL_PREFILL else "FAIL"
    if metric.key == "decode_tok_s" and llama_ratio is not None:
        return f"≥ {GOAL_DECODE:g}x llama.cpp", "PASS" if llama_ratio >= GOAL_DECODE else "FAIL"
    if metric.key == "load_s":
        return f"ours ≤ {GOAL_LOAD_S:g} s", "PASS" if ours <= GOAL_LOAD_S else "FAIL"
    return "", ""


def ratios_table(records: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Markdown rows: ours against llama.cpp and transformers, with the goals."""
    lines = [
        "| model | metric | ours | llama.cpp | ours ÷ llama.cpp | transformers | "
        "ours ÷ transformers | goal | result |",
        "|---|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for alias in args.models:
        by_runtime = records_by_runtime(records, MODELS[alias])
        if by_runtime.get("ours", {}).get("status") != "ok":
            continue
        summaries = {
            runtime: summarize(record)
            for runtime, record in by_runtime.items()
            if record["status"] == "ok"
        }
        ours = summaries["ours"]
        for metric in METRICS:
            cells: list[str] = []
            ratios: dict[str, float | None] = {}
            for other in ("llama.cpp", "transformers"):
                theirs = summaries.get(other)
                ratios[other] = ours[metric.key] / theirs[metric.key] if theirs else None
                cells.append(metric.fmt.format(theirs[metric.key]) if theirs else "—")
                cells.append(format_ratio(ratios[other]))
            goal, verdict = goal_verdict(metric, ours[metric.key], ratios["llama.cpp"])
            lines.append(
                f"| {alias.upper()} | {metric.title} | {metric.fmt.format(ours[metric.key])} | "
                f"{' | '.join(cells)} | {goal} | {verdict} |"
            )
    return lines


def quality_lines(records: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Leading greedy tokens shared between runtimes, on the first prompt."""
    lines = []
    for alias in args.models:
        ok = {
            runtime: record["tokens"][0]
            for runtime, record in records_by_runtime(records, MODELS[alias]).items()
            if record["status"] == "ok"
        }
        pairs = [("ours", "llama.cpp"), ("ours", "transformers"), ("llama.cpp", "transformers")]
        parts = [
            f"{a} vs {b}: {matching_lead(ok[a], ok[b])}" for a, b in pairs if a in ok and b in ok
        ]
        if parts:
            lines.append(f"- {alias.upper()} leading greedy tokens in common: {'; '.join(parts)}")
    return lines


def report(records: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """The whole markdown report printed to stdout."""
    lines = [
        f"Measured {meta['date']} on {meta['cpus']} cores ({meta['machine']}), "
        f"{args.threads} threads per runtime, one runtime at a time; command:",
        "",
        f"    {meta['command']}",
        "",
        f"Prompt: the first {args.prompt_tokens} tokens of `textwrap.py` "
        f"(Python {meta['python']}), "
        f"median of {args.repeats} cold requests; decode: {args.decode_tokens} greedy tokens; "
        f"keystroke: the prompt plus the next {args.keystroke_tokens} tokens of the file, "
        f"median of {args.keystrokes} requests.",
        "",
        *results_table(records, args),
        "",
        *ratios_table(records, args),
        "",
        *quality_lines(records, args),
        "- prefill = request in → first new token out, nothing cached; decode tok/s = one-token "
        "steps after the first token ÷ their time.",
        "- keystroke = time to the first new token; ours and llama.cpp reuse the KV cache of the "
        "shared prefix, transformers recomputes the whole prompt (no cache reuse here).",
        "- other CPU = share of the machine's CPU that other processes used while a runtime ran "
        f"(above {100 * BACKGROUND_LIMIT:.0f}% the row is marked disturbed: rerun when idle).",
        "- load = time to a ready model (ours: ONNX cache prepared, files in the page cache; "
        "llama.cpp maps the GGUF; transformers dequantizes it to fp32).",
        "- versions: " + ", ".join(f"{name} {v}" for name, v in meta["versions"].items() if v),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the parent and of the worker processes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.runtime", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", default="0.5b,1.5b", help="comma list of " + ",".join(MODELS))
    parser.add_argument(
        "--runtimes", default=",".join(RUNTIMES), help="comma list of " + ",".join(RUNTIMES)
    )
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="cold requests per runtime")
    parser.add_argument("--keystrokes", type=int, default=3, help="keystroke requests")
    parser.add_argument(
        "--keystroke-tokens", type=int, default=3, help="tokens typed per keystroke"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--precision", default=None, help="precision of our ONNX model (default: the machine's)"
    )
    parser.add_argument(
        "--llama-api",
        choices=("eval", "generate"),
        default="eval",
        help="llama.cpp through Llama.eval + argmax (fastest) or Llama.generate",
    )
    parser.add_argument("--json", help="also write all measurements to this file")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--worker", nargs=2, metavar=("RUNTIME", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        args.models = [name.strip().lower() for name in args.models.split(",") if name.strip()]
        args.runtimes = [name.strip() for name in args.runtimes.split(",") if name.strip()]
        unknown = [m for m in args.models if m not in MODELS] + [
            r for r in args.runtimes if r not in RUNTIMES
        ]
        if unknown:
            parser.error(f"unknown model or runtime: {', '.join(unknown)}")
        if args.precision is None:
            args.precision = machine_default_precision()
    return args


def machine_default_precision() -> str:
    """The engine's default precision here, or int4 when our runtime is not installed."""
    if not is_installed("ours"):
        return "int4"
    from runtime.models import DEFAULT_PRECISION

    return DEFAULT_PRECISION


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with --worker, one measurement in a child process)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    if args.worker is not None:
        return worker_main(args)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "command": shlex.join(
            ["python", "-m", "bench.runtime", *(argv if argv is not None else sys.argv[1:])]
        ),
        "versions": versions(),
    }
    records = run_all(args)
    print(report(records, args, meta))
    if args.json:
        payload = {"meta": meta, "options": vars(args), "records": records}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
