"""The engine the language server and the CLI call: prompt ids in, completion text out."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from runtime import models
from runtime.config import ModelConfig
from runtime.generate import (
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    ModelRunner,
    generate,
)
from runtime.kv_cache import PrefixCache
from runtime.numerics import exact_min_rows
from runtime.session import SessionOptions, create_session, device_of
from runtime.speculative import (
    DRAFT_MIN_CONFIDENCE,
    MAX_LOOKUP,
    SpeculationState,
    speculative_generate,
)
from runtime.tokenizer import QwenTokenizer

logger = logging.getLogger(__name__)

# Prefill cost per uncached prompt token before the engine has timed its own (ms): the 1.5B at
# w8a8 on an AMD EPYC without AMX (170 tokens/s, bench/RESULTS.md) and a 0.5B about 3x faster;
# every prefill of 64 tokens or more corrects them.
PRIOR_PREFILL_MS_PER_TOKEN = 6.0
PRIOR_SMALL_PREFILL_MS_PER_TOKEN = 2.0
# A warm-up reads its prompt in chunks this long, one hold of the engine each: a generation
# that comes meanwhile waits for one chunk at most (64 tokens: ~0.4 s for the 1.5B at w8a8 on
# the AMD EPYC, bench/RESULTS.md).
WARM_CHUNK = 64

# A prompt as text pieces; special pieces are control tokens, never tokenized from text.
PromptSegments = Sequence[tuple[str, bool]]

# What opening a damaged cache directory raises: onnxruntime's load errors (InvalidProtobuf for
# a garbled graph, Fail for weights it cannot read, ...), and OSError / ValueError from files
# such as tokenizer.json.
_LOAD_ERRORS: tuple[type[Exception], ...] = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoModel,
    ort_errors.NoSuchFile,
    ort_errors.RuntimeException,
    OSError,
    ValueError,
)


@contextlib.contextmanager
def _loading(prepared: models.PreparedModel) -> Iterator[None]:
    """Turn a failure to open the files of `prepared` into a ModelError saying how to rebuild."""
    try:
        yield
    except _LOAD_ERRORS as exc:
        raise prepared.load_error(exc) from exc


@dataclass(frozen=True)
class EngineOptions:
    """What to load and how: model names as `runtime.models` understands them."""

    model: str = models.DEFAULT_TARGET
    precision: str = models.DEFAULT_PRECISION
    provider: str = "auto"
    threads: int = 0
    context_window: int = 4096  # KV capacity of one cached sequence, in tokens
    cache_bytes: int = 1 << 30  # budget of all cached sequences together (per model)
    # Speculative decoding: a draft model (None: none; the target itself is never its own
    # draft) and prompt lookup. On by default with the embedded pair.
    draft_model: str | None = models.DEFAULT_DRAFT
    lookup: bool = True
    max_draft: int = 8  # longest draft-model proposal
    # It ends sooner after a token the draft model gives less than this probability (0: never).
    draft_min_confidence: float = DRAFT_MIN_CONFIDENCE
    max_lookup: int = MAX_LOOKUP  # longest prompt-lookup proposal
    # A request whose prompt the draft cache lacks more tokens of than this skips the draft
    # model (its catch-up prefill would cost more than it saves); None: the request's
    # max_new_tokens (our estimate: catching up a token costs ~1/3 of what a drafted token saves).
    max_draft_catch_up: int | None = None
    # Pad one-row passes to two rows where the kernels round a lone row differently, so that
    # greedy output is identical with and without speculation or prefix reuse (see
    # runtime.numerics; ~10-15 % of a decode step where needed, nothing where not).
    consistent_numerics: bool = True

    def without_speculation(self) -> EngineOptions:
        """These options with the draft model and prompt lookup off (`--no-draft`)."""
        return dataclasses.replace(self, draft_model=None, lookup=False)


class Engine(Protocol):
    """What the language server needs from a local or remote model."""

    def count_tokens(self, text: str) -> int:
        """Tokens `text` occupies in a prompt."""
        ...

    def encode_prompt(self, segments: PromptSegments) -> list[int]:
        """Token ids of a prompt given as (text, is_special) segments."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens included)."""
        ...

    def complete(
        self,
        prompt: Sequence[int],
        config: GenerationConfig,
        cancel: CancellationToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Generate a continuation of `prompt`."""
        ...

    def prefill_ms(self, prompt: Sequence[int], small_model: bool = False) -> float | None:
        """The expected time to read the part of `prompt` the model's cache lacks (the small
        model's with `small_model`); None when the engine cannot tell or has no such model."""
        ...

    def prefill(self, prompt: Sequence[int], cancel: CancellationToken | None = None) -> int:
        """Read `prompt` into the model's cache without generating (a warm-up); returns the
        tokens of it the cache holds."""
        ...


class TokenizingEngine:
    """The prompt side of `Engine`, done with the model's tokenizer in this process (the local
    and the remote engine share it)."""

    tokenizer: QwenTokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens `text` occupies in a prompt."""
        return len(self.tokenizer.encode(text))

    def encode_prompt(self, segments: PromptSegments) -> list[int]:
        """Token ids of (text, is_special) segments; user text cannot smuggle in control tokens."""
        return self.tokenizer.encode_segments(segments)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        return self.tokenizer.decode(list(ids))


class LocalEngine(TokenizingEngine):
    """ONNX Runtime in this process, with a prefix-reusing KV cache; one generation at a time."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: QwenTokenizer,
        options: EngineOptions,
        device: str = "cpu",
        draft: ModelRunner | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.options = options
        self.cache = PrefixCache(
            runner.config, options.context_window, options.cache_bytes, device=device
        )
        self.draft = draft
        self.draft_cache = (
            None
            if draft is None
            else PrefixCache(
                draft.config, options.context_window, options.cache_bytes, device=device
            )
        )
        # Acceptance learned across requests steers the draft length of the next ones.
        self.speculation = SpeculationState.initial(
            options.max_draft,
            max_lookup=options.max_lookup,
            draft_min_confidence=options.draft_min_confidence,
        )
        self._lock = threading.Lock()
        # Generations waiting for `_lock`: a warm-up lets them go first (a lock is not fair, and
        # a warm-up taking it back between its chunks would hold a request off to the end).
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        # Measured prefill cost per uncached token, target and small model (ms).
        self.prefill_rate = PrefillRate(PRIOR_PREFILL_MS_PER_TOKEN)
        self.small_prefill_rate = PrefillRate(PRIOR_SMALL_PREFILL_MS_PER_TOKEN)

    @classmethod
    def load(cls, options: EngineOptions, progress: bool = True) -> LocalEngine:
        """Prepare (first time: assemble and convert) and open the model named in `options`."""
        started = time.monotonic()
        prepared = models.prepare(options.model, options.precision, progress=progress)
        draft_name = options.draft_model if options.draft_model != options.model else None
        session_options = SessionOptions(
            provider=options.provider,
            threads=options.threads,
            spin_after_run=draft_name is None,
            context_window=options.context_window,  # TensorRT's shape profile
        )
        with _loading(prepared):
            session = create_session(prepared.onnx_path, session_options)
            tokenizer = QwenTokenizer.load(prepared.directory)
            numerics = options.consistent_numerics
            min_rows = exact_min_rows(session, prepared.directory) if numerics else 1
        runner = ModelRunner(session, prepared.config, min_rows=min_rows)
        draft = None
        if draft_name is not None:
            draft_prepared = models.prepare(draft_name, options.precision, progress)
            with _loading(draft_prepared):
                draft_session = create_session(draft_prepared.onnx_path, session_options)
            draft = ModelRunner(draft_session, draft_prepared.config)
        logger.info("model %s ready in %.2f s", options.model, time.monotonic() - started)
        device = device_of(session.get_providers())
        return cls(runner, tokenizer, options, device=device, draft=draft)

    @property
    def config(self) -> ModelConfig:
        """The loaded model's shape."""
        return self.runner.config

    def complete(
        self,
        prompt: Sequence[int],
        config: GenerationConfig,
        cancel: CancellationToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Generate after `prompt`, reusing the longest cached prefix of it."""
        if not prompt:
            raise ValueError("empty prompt")
        limit = self.options.context_window - 1
        if len(prompt) > limit:
            raise ValueError(f"prompt of {len(prompt)} tokens exceeds the window of {limit}")
        lookup = self.options.lookup if config.lookup is None else config.lookup
        with self._generation_turn():
            if config.small_model and self.draft is not None and self.draft_cache is not None:
                kv, _ = self.draft_cache.acquire(prompt)
                result = generate(self.draft, self.tokenizer, kv, prompt, config, cancel, on_text)
                self.small_prefill_rate.record(result)
                return self._logged(result, "small model")
            kv, _ = self.cache.acquire(prompt)
            if self.draft is None and not lookup:
                result = generate(self.runner, self.tokenizer, kv, prompt, config, cancel, on_text)
            else:
                draft_kv = None if self.draft_cache is None else self.draft_cache.acquire(prompt)[0]
                result = speculative_generate(
                    self.runner,
                    self.draft,
                    self.tokenizer,
                    kv,
                    draft_kv,
                    prompt,
                    config,
                    cancel,
                    on_text,
                    lookup=lookup,
                    max_draft=self.options.max_draft,
                    state=self.speculation,
                    max_draft_catch_up=(
                        config.max_new_tokens
                        if self.options.max_draft_catch_up is None
                        else self.options.max_draft_catch_up
                    ),
                )
            self.prefill_rate.record(result)
        return self._logged(result, "target")

    @contextlib.contextmanager
    def _generation_turn(self) -> Iterator[None]:
        """Hold the engine for a generation, ahead of any warm-up waiting for it too."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    def prefill(self, prompt: Sequence[int], cancel: CancellationToken | None = None) -> int:
        """Read `prompt` into the target's cache without generating (a warm-up), a chunk of
        WARM_CHUNK tokens per hold of the engine, so that a generation that comes meanwhile
        (the small model's quick answer) waits one chunk at most instead of the whole prompt.
        Stops when cancelled; returns the tokens of `prompt` the cache holds."""
        cached = 0
        while cancel is None or not cancel.cancelled:
            while self._waiting:  # a generation is waiting: it goes first
                time.sleep(0.002)
            with self._lock:
                kv, cached = self.cache.acquire(prompt)
                if cached >= len(prompt):
                    return cached
                chunk = prompt[cached : cached + WARM_CHUNK]
                started = time.monotonic()
                self.runner.forward(kv, chunk)
                self.prefill_rate.learn(len(chunk), (time.monotonic() - started) * 1000)
        return cached

    def prefill_ms(self, prompt: Sequence[int], small_model: bool = False) -> float | None:
        """The expected time to read the part of `prompt` the model's cache lacks, from the
        prefill rate measured on earlier requests (a prior until then)."""
        if small_model and self.draft_cache is None:
            return None
        cache = self.draft_cache if small_model and self.draft_cache else self.cache
        rate = self.small_prefill_rate if small_model else self.prefill_rate
        return rate.ms_per_token * (len(prompt) - cache.longest_prefix(prompt))

    @staticmethod
    def _logged(result: GenerationResult, model: str) -> GenerationResult:
        logger.info(
            "generated %d tokens (%s, %s): prompt %d, cached %d, prefill %.0f ms, decode %.0f ms",
            result.generated_tokens,
            result.finish_reason,
            model,
            result.prompt_tokens,
            result.cached_tokens,
            result.prefill_ms,
            result.decode_ms,
        )
        if result.speculation.rounds:
            logger.info("speculation: %s", result.speculation)
        return result


@dataclass
class PrefillRate:
    """Milliseconds per prompt token, an average over recent prefills long enough to time."""

    ms_per_token: float
    min_tokens: int = 64  # shorter prefills are dominated by per-pass overhead
    weight: float = 0.3  # of the newest measurement

    def record(self, result: GenerationResult) -> None:
        """Learn from one request's prefill (uncached tokens and their time), unless it was
        interrupted before it ended (then its time covers only part of the tokens)."""
        interrupted = result.finish_reason in ("cancelled", "deadline") and not result.token_ids
        if not interrupted:
            self.learn(result.prompt_tokens - result.cached_tokens, result.prefill_ms)

    def learn(self, tokens: int, elapsed_ms: float) -> None:
        """Learn from `tokens` read in `elapsed_ms`."""
        if tokens >= self.min_tokens and elapsed_ms > 0:
            self.ms_per_token += self.weight * (elapsed_ms / tokens - self.ms_per_token)
