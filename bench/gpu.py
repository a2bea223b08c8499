"""The GPU check: what a host with an NVIDIA GPU makes of the model, in one command.

    python -m bench.gpu [--model qwen2.5-coder-0.5b] [--precision fp16-int4] [--provider cuda]
                        [--prompt-tokens 1024] [--new-tokens 64] [--users 16] [--seconds 60]

For every GPU provider in this onnxruntime build (TensorRT, CUDA; or the one `--provider`
names) it prepares the model (default: the precision the machine would choose, `fp16-int4` on
a GPU host), opens it once with fallback to the CPU provider disabled
(`session.disable_cpu_ep_fallback`: the error names any node that would leave the GPU), then
with fallback allowed times a FIM prompt of `--prompt-tokens` tokens (prefill tokens/s, time to
first token) and `--new-tokens` greedy decode steps (tokens/s), with the KV cache on the device
and bound by IO binding as the engine binds it. Last, `bench.load` runs the team server with
`--users` simulated users (0 skips it) and its throughput row is reported. Prints a Markdown
table. Without a GPU provider it says so and exits 1: nothing is measured. `--provider cpu`
runs the same timings on the CPU (no fallback check), to try the check itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from runtime import models
from runtime.config import PRECISIONS
from runtime.generate import ModelRunner, prefill
from runtime.kv_cache import KVCache
from runtime.numerics import exact_min_rows
from runtime.session import ProviderError, SessionOptions, create_session, device_of
from runtime.tokenizer import QwenTokenizer

GPU_PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}
SOURCE = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
# What opening or running a session on a provider can fail with: a provider missing from the
# build, a node it refuses, a kernel failing on the device.
SESSION_ERRORS = (
    ProviderError,
    ort_errors.EPFail,
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)


@dataclass(frozen=True)
class Timing:
    """One provider's numbers: prompt and decode speed, time to first token."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    first_token_ms: float


def gpu_providers(requested: str | None, available: list[str]) -> list[str]:
    """The providers to check (auto|tensorrt|cuda|cpu names): those of this build, or the
    one asked for whatever the build has (creating its session then says what is missing)."""
    if requested is not None:
        return [requested]
    return [name for name, provider in GPU_PROVIDERS.items() if provider in available]


def fim_prompt(tokenizer: QwenTokenizer, tokens: int) -> list[int]:
    """A FIM prompt of about `tokens` tokens cut from a standard-library file at a line start."""
    text = SOURCE.read_text(encoding="utf-8")
    cursor = text.index("\n", len(text) // 2) + 1
    prefix = text[max(0, cursor - 6 * tokens) : cursor]
    segments = [
        ("<|fim_prefix|>", True),
        (prefix, False),
        ("<|fim_suffix|>", True),
        (text[cursor : cursor + 400], False),
        ("<|fim_middle|>", True),
    ]
    prompt = tokenizer.encode_segments(segments)
    return prompt[-tokens:] if len(prompt) > tokens else prompt


def fallback_check(model_path: Path, provider: str) -> str:
    """Whether every node runs on `provider`'s device: opens a session that may not fall back
    to the CPU provider and returns "none", or ONNX Runtime's error, which names the nodes."""
    if provider == "cpu":
        return "n/a (CPU provider)"
    try:
        create_session(model_path, SessionOptions(provider=provider, cpu_fallback=False))
    except SESSION_ERRORS as error:
        return f"refused: {error}"
    return "none"


def time_model(runner: ModelRunner, prompt: list[int], new_tokens: int, cache: KVCache) -> Timing:
    """Prefill `prompt` into the empty `cache`, then `new_tokens` greedy one-token steps."""
    started = time.perf_counter()
    logits = prefill(runner, cache, prompt, lambda: None)  # [1, V]
    assert isinstance(logits, np.ndarray), "nothing interrupts this prefill"
    token = int(np.argmax(logits[-1]))
    first = time.perf_counter()
    for _ in range(new_tokens):
        token = int(np.argmax(runner.forward(cache, [token])[-1]))
    done = time.perf_counter()
    return Timing(
        len(prompt) / (first - started), new_tokens / (done - first), 1000 * (first - started)
    )


def measure(prepared: models.PreparedModel, provider: str, args: argparse.Namespace) -> Timing:
    """Time the model on `provider` with CPU fallback allowed, after one warm-up run (TensorRT
    builds its engines, CUDA picks its kernels)."""
    window = args.prompt_tokens + args.new_tokens  # one KV shape, as TensorRT's profile has
    session = create_session(
        prepared.onnx_path, SessionOptions(provider=provider, context_window=window)
    )
    runner = ModelRunner(session, prepared.config, exact_min_rows(session, prepared.directory))
    prompt = fim_prompt(QwenTokenizer.load(prepared.directory), args.prompt_tokens)
    device = device_of(session.get_providers())
    time_model(runner, prompt[:32], 4, KVCache(runner.config, window, device))
    return time_model(runner, prompt, args.new_tokens, KVCache(runner.config, window, device))


def team_server(args: argparse.Namespace) -> str:
    """`bench.load` against `coder-lsp serve` (which picks its own provider and precision):
    its throughput and errors rows, or why it failed."""
    command = [sys.executable, "-m", "bench.load", "--users", str(args.users)]
    command += ["--seconds", str(args.seconds), "--model", args.model]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    rows = [
        line.strip("| ").replace(" | ", ": ")
        for line in done.stdout.splitlines()
        if line.startswith(("| throughput", "| errors", "| latency"))
    ]
    if done.returncode or not rows:
        return f"failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return "; ".join(rows)


def check(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The table's rows: the build, then per provider its fallback check and timings."""
    available = ort.get_available_providers()
    rows = [("onnxruntime", f"{ort.__version__}, providers {', '.join(available)}")]
    providers = gpu_providers(args.provider, available)
    if not providers:
        rows.append(("GPU provider", "none available in this onnxruntime build: nothing measured"))
        return rows
    prepared = models.prepare(args.model, args.precision, progress=False)
    rows.append(("model", f"{prepared.name} {prepared.precision} ({prepared.directory})"))
    for provider in providers:
        try:
            rows.append(
                (f"{provider}: nodes off the GPU", fallback_check(prepared.onnx_path, provider))
            )
            timing = measure(prepared, provider, args)
        except SESSION_ERRORS as error:
            rows.append((f"{provider}: error", str(error)))
            continue
        rows += [
            (
                f"{provider}: prefill",
                f"{timing.prefill_tokens_per_s:.0f} tokens/s ({args.prompt_tokens}-token prompt)",
            ),
            (f"{provider}: time to first token", f"{timing.first_token_ms:.0f} ms"),
            (f"{provider}: decode", f"{timing.decode_tokens_per_s:.1f} tokens/s"),
        ]
    if args.users:
        rows.append((f"team server, {args.users} users", team_server(args)))
    return rows


def main() -> None:
    """Run the check, print the table; exit 1 when there was no GPU provider to check."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=models.DEFAULT_DRAFT)
    parser.add_argument("--precision", default=models.DEFAULT_PRECISION, choices=PRECISIONS)
    parser.add_argument(
        "--provider", choices=("tensorrt", "cuda", "cpu"), help="default: every GPU provider"
    )
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--users", type=int, default=16, help="team server load (0: skip)")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    rows = check(args)
    print("| check | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if not gpu_providers(args.provider, ort.get_available_providers()):
        sys.exit(1)


if __name__ == "__main__":
    main()
