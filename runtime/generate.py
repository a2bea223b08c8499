"""Prefill and decode: the forward pass over a KV cache, sampling, stop rules, cancellation."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import onnxruntime as ort

from runtime.config import ModelConfig
from runtime.convert import kv_input_names, kv_output_names
from runtime.kv_cache import KVCache
from runtime.tokenizer import QwenTokenizer

# Every special token that ends or escapes a FIM answer in Qwen2.5-Coder's vocabulary.
STOP_TOKENS = (
    "<|endoftext|>",
    "<|fim_pad|>",
    "<|file_sep|>",
    "<|repo_name|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|im_end|>",
)
# A prompt is fed in chunks this long so that cancellation is seen during a long prefill too.
PREFILL_CHUNK = 256


class CancellationToken:
    """Set from any thread; generation checks it before every forward pass."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the generation using this token to stop at its next step."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._event.is_set()


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings: greedy when temperature is 0; `timeout_s` counts from the call."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop_strings: tuple[str, ...] = ()
    # Called with the text so far; returns where to cut it to stop (e.g. the end of a block).
    stop_rule: Callable[[str], int | None] | None = None
    timeout_s: float | None = None
    seed: int | None = None
    # Prompt-lookup speculation for this request; None: the engine's own setting. Suits answers
    # that copy much of the prompt (a repaired function).
    lookup: bool | None = None
    # Run the engine's small (draft) model alone: a quick answer while the target's cache is
    # cold. Ignored by an engine without one.
    small_model: bool = False
    # Stream the line being written too, which `stop_rule` may still cut away: for a caller
    # that judges unfinished text itself (the language server shows a line's whole words at
    # its deadline), not for one that shows every piece as it comes.
    stream_unfinished_line: bool = False


@dataclass
class SpeculationStats:
    """What speculative decoding did in one generation (all zero for plain decoding). Drafted
    tokens count once the target verified them: a lookup extension only if the target reached it.
    """

    draft_proposed: int = 0  # draft-model tokens
    draft_accepted: int = 0
    lookup_proposed: int = 0  # prompt-lookup tokens: matches, guesses, reached extensions
    lookup_accepted: int = 0
    rounds: int = 0  # target verify passes after the prefill
    draft_fed: int = 0  # tokens the draft model ran, catch-up included
    extension_proposed: int = 0  # lookup tokens sent after a draft model's, reached or not
    extension_accepted: int = 0

    @property
    def proposed(self) -> int:
        """Drafted tokens of both sources (draft model and prompt lookup)."""
        return self.draft_proposed + self.lookup_proposed

    @property
    def accepted(self) -> int:
        """Drafted tokens of both sources that the target accepted."""
        return self.draft_accepted + self.lookup_accepted

    def __add__(self, other: SpeculationStats) -> SpeculationStats:
        """Both counts summed (a repair's attempts, a benchmark's runs)."""
        return SpeculationStats(
            *(getattr(self, count.name) + getattr(other, count.name) for count in fields(self))
        )

    def __str__(self) -> str:
        """One log line: rounds, then accepted/drafted tokens in all and per source."""
        return (
            f"{self.rounds} rounds, accepted {self.accepted}/{self.proposed} drafted "
            f"(draft model {self.draft_accepted}/{self.draft_proposed}, "
            f"lookup {self.lookup_accepted}/{self.lookup_proposed}, "
            f"extension {self.extension_accepted}/{self.extension_proposed} sent), "
            f"draft model fed {self.draft_fed} tokens"
        )


@dataclass
class GenerationResult:
    """What came out, why it stopped, and what it cost."""

    token_ids: list[int]
    text: str
    finish_reason: str  # stop | stop_string | length | cancelled | deadline | context
    prompt_tokens: int
    cached_tokens: int
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    speculation: SpeculationStats = field(default_factory=SpeculationStats)

    @property
    def generated_tokens(self) -> int:
        """Number of tokens produced (stop tokens excluded)."""
        return len(self.token_ids)


class ModelRunner:
    """One ONNX session; `forward` scores new tokens that follow what a KV cache holds.

    `min_rows`: passes with fewer new tokens are padded to this many rows and the padding is
    dropped again. The graph's attention already runs every pass on at least two rows (a
    scratch row, `runtime.convert`), so any two passes agree bit for bit, whatever their row
    count or chunking, as long as the matrix products do: where a kernel rounds a lone row
    differently (`runtime.numerics` asks; int4 with blocks of 64+ does), min_rows=2 keeps plain
    decoding, a speculative verify pass and a prefix-reusing request computing the same numbers.
    """

    def __init__(
        self, session: ort.InferenceSession, config: ModelConfig, min_rows: int = 1
    ) -> None:
        self.session = session
        self.config = config
        self.min_rows = min_rows
        # Keyed by the cache itself, weakly: a freed cache's binding goes with it (by id(), a new
        # cache at a reused address would be given the dead one's buffers).
        self._bindings: weakref.WeakKeyDictionary[KVCache, ort.IOBinding] = (
            weakref.WeakKeyDictionary()
        )

    def _binding(self, cache: KVCache) -> ort.IOBinding:
        # One binding per cache: its 2 x layers KV buffers are bound once, not every step.
        binding = self._bindings.get(cache)
        if binding is None:
            binding = self.session.io_binding()
            # Outputs come back in binding order: logits first, so they are output 0.
            binding.bind_output("logits")
            for layer in range(self.config.num_layers):
                for value, past, present in zip(
                    (cache.keys[layer], cache.values[layer]),
                    kv_input_names(layer),
                    kv_output_names(layer),
                    strict=True,
                ):
                    binding.bind_ortvalue_input(past, value)
                    binding.bind_ortvalue_output(present, value)
            self._bindings[cache] = binding
        return binding

    def forward(self, cache: KVCache, tokens: Sequence[int], keep: int = 1) -> np.ndarray:
        """Run `tokens` after the cache; returns logits [keep, vocab] of the last positions."""
        if not tokens:
            raise ValueError("forward needs at least one token")
        total = cache.length + len(tokens)
        if total > cache.capacity:
            raise ValueError(f"sequence of {total} tokens exceeds the cache's {cache.capacity}")
        # Padding repeats the last token; it needs room in the cache (else: one plain row).
        padding = min(max(0, self.min_rows - len(tokens)), cache.capacity - total)
        if padding:
            logits = self._run(cache, [*tokens, *[tokens[-1]] * padding], keep + padding)
            cache.truncate(cache.length - padding)
            return logits[:keep]
        return self._run(cache, tokens, keep)

    def _run(self, cache: KVCache, tokens: Sequence[int], keep: int) -> np.ndarray:
        total = cache.length + len(tokens)
        binding = self._binding(cache)
        # bind_cpu_input does not keep the arrays alive: they must outlive the run.
        feeds = {
            "input_ids": np.asarray([tokens], dtype=np.int64),  # [1, S]
            "seqlens_k": np.array([total - 1], dtype=np.int32),  # [1]
            "total_sequence_length": np.array(total, dtype=np.int32),  # []
            "logits_to_keep": np.array([keep], dtype=np.int64),  # [1]
        }
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output("logits")
        self.session.run_with_iobinding(binding)
        cache.append(tokens)
        return binding.get_outputs()[0].numpy()[0]  # [keep, V]


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of logits [V] / temperature, in float64."""
    scaled = logits.astype(np.float64) / temperature
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    return probabilities


def nucleus(probabilities: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The smallest set of tokens whose mass reaches top_p (at least one): ids, renormalized p."""
    order = np.argsort(-probabilities)
    cumulative = np.cumsum(probabilities[order])
    keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
    return keep, probabilities[keep] / probabilities[keep].sum()


def token_distribution(logits: np.ndarray, config: GenerationConfig) -> np.ndarray:
    """The full [V] distribution `sample_token` draws from when temperature > 0."""
    probabilities = scaled_probabilities(logits, config.temperature)
    if config.top_p < 1.0:
        keep, kept = nucleus(probabilities, config.top_p)
        probabilities = np.zeros_like(probabilities)
        probabilities[keep] = kept
    return probabilities


def sample_token(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> int:
    """Greedy argmax, or temperature + nucleus (top-p) sampling, from logits [V]."""
    if config.temperature <= 0:
        return int(np.argmax(logits))
    probabilities = scaled_probabilities(logits, config.temperature)
    if config.top_p < 1.0:
        keep, kept = nucleus(probabilities, config.top_p)
        return int(rng.choice(keep, p=kept))
    return int(rng.choice(len(probabilities), p=probabilities))


class StopChecker:
    """Ends generation at a stop token or stop string, and trims the string from the text."""

    def __init__(self, tokenizer: QwenTokenizer, config: GenerationConfig) -> None:
        self.stop_ids = frozenset(tokenizer.token_id(name) for name in STOP_TOKENS)
        self.stop_strings = tuple(s for s in config.stop_strings if s)
        self.stop_rule = config.stop_rule
        self.unfinished_line = config.stream_unfinished_line

    def settled(self, text: str) -> int:
        """How much of `text` no later token can cut away, so streaming may show it."""
        holdback = max((len(s) - 1 for s in self.stop_strings), default=0)
        settled = len(text) - holdback
        if self.stop_rule is not None and not self.unfinished_line:
            # Stop rules judge whole lines: the line being written is not settled yet.
            settled = min(settled, text.rfind("\n") + 1)
        return max(settled, 0)

    def cut(self, text: str) -> int | None:
        """Where to cut `text`: the earliest stop string or the stop rule's answer, or None."""
        hits = [index for index in (text.find(s) for s in self.stop_strings) if index >= 0]
        if self.stop_rule is not None:
            ruled = self.stop_rule(text)
            if ruled is not None:
                hits.append(ruled)
        return min(hits) if hits else None


def interruption_check(
    cancel: CancellationToken | None, deadline: float | None
) -> Callable[[], str | None]:
    """A function returning "cancelled" / "deadline" once generation must stop, else None."""

    def interrupted() -> str | None:
        if cancel is not None and cancel.cancelled:
            return "cancelled"
        if deadline is not None and time.monotonic() > deadline:
            return "deadline"
        return None

    return interrupted


def reuse_prefix(cache: KVCache, prompt: Sequence[int]) -> int:
    """Truncate `cache` to its prefix shared with `prompt`, leaving >= 1 prompt token to feed."""
    cached = cache.common_prefix(prompt)
    if cached == len(prompt):
        # The whole prompt is cached, but we need its last logits: recompute one position.
        cached -= 1
    cache.truncate(cached)
    return cached


def prefill(
    runner: ModelRunner,
    cache: KVCache,
    tokens: Sequence[int],
    interrupted: Callable[[], str | None],
) -> np.ndarray | str:
    """Feed `tokens` (at least one) in chunks; the last logits [1, V], or why it was interrupted."""
    pending = list(tokens)
    logits: np.ndarray | None = None
    while pending:
        reason = interrupted()
        if reason:
            return reason
        chunk, pending = pending[:PREFILL_CHUNK], pending[PREFILL_CHUNK:]
        logits = runner.forward(cache, chunk)
    assert logits is not None, "at least one token is always fed"
    return logits


class TextStream:
    """Generated tokens in, text out: stop tokens and strings, streaming of settled text."""

    def __init__(
        self,
        tokenizer: QwenTokenizer,
        config: GenerationConfig,
        on_text: Callable[[str], None] | None,
    ) -> None:
        self.stops = StopChecker(tokenizer, config)
        self.decoder = tokenizer.streaming_decoder()
        self.on_text = on_text
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0  # how much of `text` on_text has seen

    def push(self, token: int) -> str | None:
        """Add one sampled token; "stop" / "stop_string" when it ends generation, else None."""
        if token in self.stops.stop_ids:
            return "stop"
        self.token_ids.append(token)
        self.text += self.decoder.push(token)
        cut = self.stops.cut(self.text)
        if cut is not None:
            self.text = self.text[:cut]
            return "stop_string"
        if self.on_text is not None:
            settled = self.stops.settled(self.text)
            if settled > self.emitted:
                self.on_text(self.text[self.emitted : settled])
                self.emitted = settled
        return None

    def finish(self, reason: str) -> str:
        """End the stream (stopped for `reason`); flush the rest to on_text; the final text."""
        if reason != "stop_string":
            self.text += self.decoder.finish()
        if self.on_text is not None and len(self.text) > self.emitted:
            self.on_text(self.text[self.emitted :])
            self.emitted = len(self.text)
        return self.text


@dataclass
class Prefilled:
    """A generation after its prompt was fed: the result so far, the interruption check, the
    last logits [1, V] (None when interrupted: `result.finish_reason` says why) and when the
    prefill ended (time.monotonic)."""

    result: GenerationResult
    interrupted: Callable[[], str | None]
    logits: np.ndarray | None
    done: float


def start_generation(
    runner: ModelRunner,
    cache: KVCache,
    prompt: Sequence[int],
    config: GenerationConfig,
    cancel: CancellationToken | None,
) -> Prefilled:
    """Reuse what `cache` shares with `prompt`, feed the rest, time it: what every decoding
    loop (plain or speculative) starts with."""
    started = time.monotonic()
    deadline = None if config.timeout_s is None else started + config.timeout_s
    interrupted = interruption_check(cancel, deadline)
    cached = reuse_prefix(cache, prompt)
    result = GenerationResult([], "", "length", len(prompt), cached)
    logits = prefill(runner, cache, prompt[cached:], interrupted)
    done = time.monotonic()
    result.prefill_ms = (done - started) * 1000
    if isinstance(logits, str):
        result.finish_reason = logits
        return Prefilled(result, interrupted, None, done)
    return Prefilled(result, interrupted, logits, done)


def generate(
    runner: ModelRunner,
    tokenizer: QwenTokenizer,
    cache: KVCache,
    prompt: Sequence[int],
    config: GenerationConfig,
    cancel: CancellationToken | None = None,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Continue `prompt` in `cache` (which already holds a prefix of it) until a stop rule fires.

    `on_text` receives each newly decoded piece of text (for streaming). The cache ends holding
    the prompt and the generated tokens, ready for prefix reuse by the next request.
    """
    start = start_generation(runner, cache, prompt, config, cancel)
    result, interrupted, logits = start.result, start.interrupted, start.logits
    if logits is None:
        return result
    rng = np.random.default_rng(config.seed)
    stream = TextStream(tokenizer, config, on_text)
    result.token_ids = stream.token_ids
    while True:
        token = sample_token(logits[-1], config, rng)
        reason = stream.push(token)
        if reason is None and len(stream.token_ids) >= config.max_new_tokens:
            reason = "length"
        if reason is None and cache.length >= cache.capacity:
            reason = "context"
        if reason is None:
            reason = interrupted()
        if reason:
            result.finish_reason = reason
            break
        logits = runner.forward(cache, [token])
    result.text = stream.finish(result.finish_reason)
    result.decode_ms = (time.monotonic() - start.done) * 1000
    return result
