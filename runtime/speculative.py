"""Speculative decoding: cheap drafts (prompt lookup or a small draft model) verified k at a time.

One round: propose up to k tokens after the accepted sequence, score [last token, drafts] in ONE
target forward pass (logits of all k+1 positions), keep the longest prefix the target agrees with
plus the target's own next token, and truncate both KV caches back to what was accepted (free: a
cache's `tokens` says which positions are valid). Greedy output is the target's greedy output;
with temperature > 0 the rejection rule keeps every emitted token distributed as the target's
(processed: temperature + top-p) distribution.

Invariant between rounds (as in `generate`): the target cache holds the sequence (prompt +
generated) except its last token, whose logits come from the next pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.generate import (
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    ModelRunner,
    TextStream,
    interruption_check,
    prefill,
    reuse_prefix,
    sample_token,
    token_distribution,
)
from runtime.kv_cache import KVCache
from runtime.tokenizer import QwenTokenizer

LOOKUP_MAX_NGRAM = 3
# Shortest tail n-gram whose match is worth a verify pass: single-token matches were mostly
# wrong on code (int4 1.5B: 4 of 21 accepted), and with a draft model (~77 % acceptance) only
# 3-gram matches beat it.
LOOKUP_MIN_NGRAM = 2
LOOKUP_MIN_NGRAM_WITH_DRAFT = 3


def lookup_draft(
    sequence: Sequence[int] | np.ndarray, k: int, min_ngram: int = 1, max_ngram: int = 3
) -> tuple[list[int], int]:
    """Prompt lookup: the tokens that followed the most recent earlier occurrence of the longest
    tail n-gram (n = max_ngram..min_ngram) of `sequence`; (up to k tokens, n), or ([], 0)."""
    if k <= 0:
        return [], 0
    array = np.asarray(sequence, dtype=np.int64)
    length = array.size
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        tail = array[length - n :]
        # Start positions i < length - n whose n tokens equal the tail (the tail itself excluded).
        span = length - n
        hits = array[:span] == tail[0]
        for offset in range(1, n):
            hits &= array[offset : span + offset] == tail[offset]
        found = np.flatnonzero(hits)
        if found.size:
            start = int(found[-1]) + n
            return [int(token) for token in array[start : start + k]], n
    return [], 0


def speculative_accept(
    p_target: np.ndarray,
    draft_token: int,
    rng: np.random.Generator,
    q_draft: np.ndarray | None = None,
) -> tuple[bool, int]:
    """The speculative-sampling rule for one drafted token; (accepted, emitted token).

    Accept `draft_token` with probability min(1, p(x)/q(x)); on rejection emit a sample from the
    normalized max(0, p - q). `q_draft` None means a deterministic proposal (q one-hot at x):
    accept with probability p(x), else sample from p without x. Either way the emitted token is
    distributed exactly as p_target.
    """
    p_x = float(p_target[draft_token])
    q_x = 1.0 if q_draft is None else float(q_draft[draft_token])
    if q_x > 0 and rng.random() < min(1.0, p_x / q_x):
        return True, draft_token
    if q_draft is None:
        residual = p_target.astype(np.float64, copy=True)
        residual[draft_token] = 0.0
    else:
        residual = np.maximum(p_target.astype(np.float64) - q_draft, 0.0)
    total = residual.sum()
    if total <= 0:  # p == q up to rounding: rejection had probability ~0; fall back to p.
        residual, total = p_target.astype(np.float64), float(p_target.sum())
    return False, int(rng.choice(residual.size, p=residual / total))


@dataclass
class AdaptiveDraftLength:
    """k in [0, max_draft] steered by an EMA of the per-token acceptance rate.

    Grows while acceptance is high, shrinks while it is low; at 0 the source is idle and
    is probed again with k=1 after `probe_after` rounds without it.
    """

    max_draft: int
    k: int = 2
    ema: float = 0.6
    alpha: float = 0.3
    grow_above: float = 0.7
    shrink_below: float = 0.4
    probe_after: int = 16
    idle: int = 0

    def __post_init__(self) -> None:
        self.k = max(0, min(self.k, self.max_draft))

    def update(self, proposed: int, accepted: int) -> None:
        """Record one verified round."""
        if proposed <= 0:
            return
        self.ema = (1 - self.alpha) * self.ema + self.alpha * accepted / proposed
        if self.ema >= self.grow_above:
            self.k = min(self.k + 1, self.max_draft)
        elif self.ema < self.shrink_below:
            self.k = max(self.k - 1, 0)
        self.idle = 0

    def current(self) -> int:
        """k for this round (0: do not use this source); counts idle rounds towards a probe."""
        if self.k == 0 and self.max_draft > 0:
            self.idle += 1
            if self.idle > self.probe_after:
                self.k, self.ema, self.idle = 1, (self.grow_above + self.shrink_below) / 2, 0
        return self.k


@dataclass
class SpeculationState:
    """The adaptive draft lengths of both sources. Pass the same state to successive calls (an
    engine keeps one per draft setup) to carry what was learned about acceptance across requests.
    """

    lookup: AdaptiveDraftLength
    draft: AdaptiveDraftLength

    @classmethod
    def initial(cls, max_draft: int = 4) -> SpeculationState:
        """Lookup starts at max_draft (its drafts cost nothing), the draft model at half."""
        return cls(
            AdaptiveDraftLength(max_draft, k=max_draft),
            AdaptiveDraftLength(max_draft, k=max(1, max_draft // 2)),
        )


class _Drafter:
    """The draft model over its own KV cache, kept to a prefix of the accepted sequence."""

    def __init__(self, runner: ModelRunner, cache: KVCache) -> None:
        self.runner = runner
        self.cache = cache
        self.fed = 0  # tokens run through the draft model

    def propose(
        self,
        sequence: list[int],
        k: int,
        config: GenerationConfig,
        rng: np.random.Generator,
        interrupted: Callable[[], str | None],
    ) -> tuple[list[int], list[np.ndarray] | None] | str:
        """k tokens after `sequence` (greedy, or sampled with their distributions q), or why
        it was interrupted. Leaves the cache holding sequence + drafts[:-1]."""
        cached = reuse_prefix(self.cache, sequence)
        self.fed += len(sequence) - cached
        logits = prefill(self.runner, self.cache, sequence[cached:], interrupted)
        drafts: list[int] = []
        distributions: list[np.ndarray] | None = None if config.temperature <= 0 else []
        while True:
            if isinstance(logits, str):
                return logits
            row = logits[-1]
            if distributions is None:
                token = int(np.argmax(row))
            else:
                q = token_distribution(row, config)
                token = int(rng.choice(q.size, p=q))
                distributions.append(q)
            drafts.append(token)
            if len(drafts) >= k:
                return drafts, distributions
            reason = interrupted()
            if reason:
                return reason
            logits = self.runner.forward(self.cache, [token])
            self.fed += 1


def speculative_generate(
    target: ModelRunner,
    draft: ModelRunner | None,
    tokenizer: QwenTokenizer,
    target_cache: KVCache,
    draft_cache: KVCache | None,
    prompt: Sequence[int],
    config: GenerationConfig,
    cancel: CancellationToken | None = None,
    on_text: Callable[[str], None] | None = None,
    *,
    lookup: bool = True,
    max_draft: int = 4,
    state: SpeculationState | None = None,
    max_draft_catch_up: int | None = None,
) -> GenerationResult:
    """`generate` with speculation: same contract, same greedy output, same sampling law.

    Drafts come from prompt lookup (free) when it finds a tail n-gram of length >= 2 (>= 3
    with a draft model), else from `draft` (k greedy or sampled steps over `draft_cache`,
    which may hold any prefix of the sequence, e.g. from a PrefixCache of the draft model).
    `result.extra` counts draft_proposed / draft_accepted / lookup_proposed / lookup_accepted
    (verified tokens), rounds (target passes after the prefill) and draft_fed (tokens the draft
    model ran, catch-up included).

    `state` carries the adaptive draft lengths across calls (default: fresh, from `max_draft`).
    A draft cache that lacks more than `max_draft_catch_up` tokens of the prompt (a cold
    request) leaves the draft model out of this call: its prefill would cost more than it saves.
    """
    if draft is not None and draft_cache is None:
        raise ValueError("a draft model needs a draft KV cache")
    started = time.monotonic()
    deadline = None if config.timeout_s is None else started + config.timeout_s
    interrupted = interruption_check(cancel, deadline)
    cached = reuse_prefix(target_cache, prompt)
    result = GenerationResult([], "", "length", len(prompt), cached)
    extra = {
        "draft_proposed": 0,
        "draft_accepted": 0,
        "lookup_proposed": 0,
        "lookup_accepted": 0,
        "rounds": 0,
        "draft_fed": 0,
    }
    result.extra = extra
    rng = np.random.default_rng(config.seed)
    sampling = config.temperature > 0

    logits = prefill(target, target_cache, prompt[cached:], interrupted)
    prefill_done = time.monotonic()
    result.prefill_ms = (prefill_done - started) * 1000
    if isinstance(logits, str):
        result.finish_reason = logits
        return result

    stream = TextStream(tokenizer, config, on_text)
    result.token_ids = stream.token_ids
    sequence = list(prompt)
    if state is None:
        state = SpeculationState.initial(max_draft)
    lookup_k, draft_k = state.lookup, state.draft
    drafter = None if draft is None or draft_cache is None else _Drafter(draft, draft_cache)
    if (
        drafter is not None
        and max_draft_catch_up is not None
        and len(prompt) - drafter.cache.common_prefix(prompt) > max_draft_catch_up
    ):
        drafter = None
    min_ngram = LOOKUP_MIN_NGRAM if drafter is None else LOOKUP_MIN_NGRAM_WITH_DRAFT

    def emit(token: int) -> str | None:
        """Push one accepted token; the finish reason if generation ends with it."""
        reason = stream.push(token)
        if token not in stream.stops.stop_ids:
            sequence.append(token)  # sequence == prompt + result.token_ids
        if reason:
            return reason
        if len(stream.token_ids) >= config.max_new_tokens:
            return "length"
        # What `generate` checks: its cache then holds everything but this token.
        if len(sequence) - 1 >= target_cache.capacity:
            return "context"
        return None

    reason = emit(sample_token(logits[-1], config, rng))
    while reason is None:
        reason = interrupted()
        if reason:
            break
        # Room: the verify pass appends k+1 positions; more than the remaining budget is waste.
        room = min(
            target_cache.capacity - target_cache.length - 1,
            config.max_new_tokens - len(stream.token_ids) - 1,
        )
        if drafter is not None:
            room = min(room, drafter.cache.capacity - len(sequence) + 1)
        drafts: list[int] = []
        q_rows: list[np.ndarray] | None = None
        source = ""
        if lookup and room > 0:
            k = min(lookup_k.current(), room)
            drafts, _ = lookup_draft(sequence, k, min_ngram, LOOKUP_MAX_NGRAM)
            source = "lookup" if drafts else ""
        if not drafts and drafter is not None and room > 0:
            k = min(draft_k.current(), room)
            if k > 0:
                proposal = drafter.propose(sequence, k, config, rng, interrupted)
                if isinstance(proposal, str):
                    reason = proposal
                    break
                drafts, q_rows = proposal
                source = "draft"
        reason = interrupted()
        if reason:
            break

        base = target_cache.length  # == len(sequence) - 1
        rows = target.forward(target_cache, [sequence[-1], *drafts], keep=len(drafts) + 1)
        extra["rounds"] += 1
        accepted: list[int] = []
        correction: int | None = None
        for index, proposed in enumerate(drafts):
            if sampling:
                p = token_distribution(rows[index], config)
                q = None if q_rows is None else q_rows[index]
                ok, token = speculative_accept(p, proposed, rng, q)
            else:
                token = int(np.argmax(rows[index]))
                ok = token == proposed
            if not ok:
                correction = token
                break
            accepted.append(proposed)
        if correction is None:
            correction = sample_token(rows[len(drafts)], config, rng)
        if drafts:
            extra[f"{source}_proposed"] += len(drafts)
            extra[f"{source}_accepted"] += len(accepted)
            (lookup_k if source == "lookup" else draft_k).update(len(drafts), len(accepted))
        # Positions of rejected drafts are garbage now; the last emitted token is never cached.
        target_cache.truncate(base + 1 + len(accepted))
        for token in [*accepted, correction]:
            reason = emit(token)
            if reason:
                break
        if drafter is not None:
            drafter.cache.truncate(min(drafter.cache.length, len(sequence) - 1))
    if drafter is not None:
        extra["draft_fed"] = drafter.fed
    # Leave the cache as `generate` would: prompt + generated tokens, minus the last one.
    target_cache.truncate(min(target_cache.length, len(sequence) - (reason != "stop")))
    result.finish_reason = reason
    result.text = stream.finish(reason)
    result.decode_ms = (time.monotonic() - prefill_done) * 1000
    return result
