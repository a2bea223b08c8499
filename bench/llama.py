"""llama-cpp-python on the same GGUF as ours, fed the prompts our pipeline builds as token ids:
one home for loading it and for a greedy generation under our stop rules (bench.latency,
bench.replay, bench.repo_quality). Needs the `bench` extra (`pip install -e '.[bench]'`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.engine import TokenizingEngine
from runtime.generate import CancellationToken, GenerationConfig, GenerationResult, TextStream
from runtime.tokenizer import QwenTokenizer


def load_llama(gguf: Path, threads: int) -> Any:
    """A llama.cpp model with our context window, on `threads` threads."""
    from llama_cpp import Llama

    return Llama(
        model_path=str(gguf),
        n_ctx=4096,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )


@dataclass
class LlamaRun:
    """One greedy generation: its text stream, why it ended, what it cost."""

    stream: TextStream
    reason: str
    reused: int  # prompt tokens llama.cpp's cache already held
    first_token_ms: float  # prompt processing and the first token
    capped: bool = False  # stopped by the time cap


def llama_generate(
    llm: Any,
    tokenizer: QwenTokenizer,
    ids: Sequence[int],
    config: GenerationConfig,
    cap_ms: float | None = None,
) -> LlamaRun:
    """Greedy generation from prompt `ids` under `config`'s stop tokens, stop rule and token
    limit; with `cap_ms`, llama-server's `t_max_predict_ms`: generation stops `cap_ms` after
    the first generated token once a newline has been generated."""
    reused = _common_prefix(list(llm.input_ids[: llm.n_tokens]), ids)
    stream = TextStream(tokenizer, config, None)
    started = time.perf_counter()
    run = LlamaRun(stream, "length", reused, 0.0)
    first_token = 0.0
    for token in llm.generate(list(ids), temp=0.0, repeat_penalty=1.0):
        now = time.perf_counter()
        if not first_token:
            first_token, run.first_token_ms = now, (now - started) * 1000
        stop = stream.push(int(token))
        if stop:
            run.reason = stop
            break
        if len(stream.token_ids) >= config.max_new_tokens:
            break
        if cap_ms is not None and "\n" in stream.text and (now - first_token) * 1000 > cap_ms:
            run.capped = True
            break
    stream.finish(run.reason)
    return run


def _common_prefix(one: Sequence[int], two: Sequence[int]) -> int:
    """Length of the longest common prefix."""
    return next(
        (index for index, (a, b) in enumerate(zip(one, two, strict=False)) if a != b),
        min(len(one), len(two)),
    )


class PromptEngine(TokenizingEngine):
    """The prompt side of an engine (the model's tokenizer in this process), no model of ours:
    prompts for llama.cpp (`LlamaEngine` generates) and for prompt-only runs."""

    def __init__(self, tokenizer: QwenTokenizer) -> None:
        self.tokenizer = tokenizer

    def complete(
        self,
        prompt: Sequence[int],
        config: GenerationConfig,
        cancel: CancellationToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Not available: this engine only builds prompts."""
        raise NotImplementedError("PromptEngine only builds prompts")

    def prefill_ms(self, prompt: Sequence[int], small_model: bool = False) -> float | None:
        """Unknown: no prefill rate is measured here."""
        return None

    def prefill(self, prompt: Sequence[int], cancel: CancellationToken | None = None) -> int:
        """No warm-ups: every request is timed whole."""
        return 0


class LlamaEngine(PromptEngine):
    """llama.cpp as our pipeline's engine, so that the same prompts, stop rules and
    post-processing run on it; with `cold`, every request starts with an empty cache."""

    def __init__(self, gguf: Path, tokenizer: QwenTokenizer, threads: int, cold: bool) -> None:
        super().__init__(tokenizer)
        self.llm = load_llama(gguf, threads)
        self.cold = cold

    def complete(
        self,
        prompt: Sequence[int],
        config: GenerationConfig,
        cancel: CancellationToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Generate greedily (no cancellation, no streaming: benchmarks wait for the end)."""
        if self.cold:
            self.llm.reset()
        started = time.perf_counter()
        run = llama_generate(self.llm, self.tokenizer, prompt, config)
        total_ms = (time.perf_counter() - started) * 1000
        stream = run.stream
        return GenerationResult(
            stream.token_ids,
            stream.text,
            run.reason,
            len(prompt),
            run.reused,
            prefill_ms=run.first_token_ms,
            decode_ms=total_ms - run.first_token_ms,
        )
