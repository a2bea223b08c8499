"""Speculative decoding: cheap drafts (prompt lookup or a small draft model) verified k at a time.

One round: propose up to k tokens after the accepted sequence, score [last token, drafts] in ONE
target forward pass (logits of all k+1 positions), keep the longest prefix the target agrees with
plus the target's own next token, and truncate both KV caches back to what was accepted (free: a
cache's `tokens` says which positions are valid). Greedy output is the target's greedy output;
with temperature > 0 the rejection rule keeps every emitted token distributed as the target's
(processed: temperature + top-p) distribution.

Invariant between rounds (as in `generate`): the target cache holds the sequence (prompt +
generated) except its last token, whose logits come from the next pass.

Where the constants come from: bench/RESULTS.md, "Speculation constants".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.generate import (
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    ModelRunner,
    SpeculationStats,
    TextStream,
    prefill,
    reuse_prefix,
    sample_token,
    start_generation,
    token_distribution,
)
from runtime.kv_cache import KVCache
from runtime.tokenizer import QwenTokenizer

LOOKUP_MAX_NGRAM = 3
# Shortest tail n-gram whose match is worth a verify pass, without and with a draft model.
LOOKUP_MIN_NGRAM = 2
LOOKUP_MIN_NGRAM_WITH_DRAFT = 3
# Prior acceptance of a one-token guess (any match, 1-grams too): pays where a 2nd row is cheap.
GUESS_ACCEPTANCE = 0.2
# Longest lookup draft: copied runs are long; the cost-aware length cuts it where rows are dear.
MAX_LOOKUP = 12
# A draft model's proposal ends after a token it gave less than this probability.
DRAFT_MIN_CONFIDENCE = 0.8


def lookup_draft(
    sequence: Sequence[int] | np.ndarray,
    k: int,
    min_ngram: int = 1,
    max_ngram: int = LOOKUP_MAX_NGRAM,
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


# Cost of a target pass over 1..8 rows relative to one row (int4 1.5B), until passes are timed.
PRIOR_PASS_COST = (1.0, 1.10, 1.25, 1.52, 1.61, 1.82, 2.05, 2.29)
PRIOR_ROW_COST = 0.24  # each row beyond those
# Cost of a draft-model step relative to a one-row target pass (0.5B vs 1.5B), until timed.
PRIOR_DRAFT_STEP = 0.35


def prior_pass_cost(rows: int) -> float:
    """The prior relative cost of a target pass over `rows` rows."""
    if rows <= len(PRIOR_PASS_COST):
        return PRIOR_PASS_COST[max(rows, 1) - 1]
    return PRIOR_PASS_COST[-1] + PRIOR_ROW_COST * (rows - len(PRIOR_PASS_COST))


@dataclass
class PassCosts:
    """What passes cost in ms (EMAs of measured times): the target by row count, one step of
    the draft model. A row count not measured yet is scaled from the nearest measured one by
    the prior ratios; before any measurement, costs are the priors themselves (unit = one row).
    """

    target_ms: dict[int, float] = field(default_factory=dict)
    draft_step_ms: float | None = None
    alpha: float = 0.2

    def _blend(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.alpha) * old + self.alpha * new

    def record_target(self, rows: int, ms: float) -> None:
        """One target pass over `rows` rows took `ms`."""
        self.target_ms[rows] = self._blend(self.target_ms.get(rows), ms)

    def record_draft(self, steps: int, ms: float) -> None:
        """`steps` draft-model steps took `ms`."""
        if steps > 0:
            self.draft_step_ms = self._blend(self.draft_step_ms, ms / steps)

    def target(self, rows: int) -> float:
        """Estimated cost of a target pass over `rows` rows."""
        if rows in self.target_ms:
            return self.target_ms[rows]
        if not self.target_ms:
            return prior_pass_cost(rows)
        nearest = min(self.target_ms, key=lambda measured: abs(measured - rows))
        return self.target_ms[nearest] * prior_pass_cost(rows) / prior_pass_cost(nearest)

    def draft_step(self) -> float:
        """Estimated cost of one draft-model step."""
        if self.draft_step_ms is not None and self.target_ms:
            return self.draft_step_ms
        return PRIOR_DRAFT_STEP * self.target(1)


def expected_tokens(acceptance: float, k: int) -> float:
    """Tokens a verify round emits with k drafts when each draft is accepted with probability
    `acceptance` once its predecessors were: 1 + a + a^2 + ... + a^k (the +1 is the target's
    own token)."""
    return sum(acceptance**index for index in range(k + 1))


@dataclass
class DraftSource:
    """One source of drafts (prompt lookup or the draft model): an EMA of the per-token
    acceptance, and the draft length that pays best given what passes cost.

    `length` picks k maximizing tokens per ms, expected_tokens(a, k) / (target pass over k+1
    rows + k draft steps), against a plain pass (k = 0). A source at 0 is probed with k=1 after
    `probe_after` rounds so that its acceptance stays known. `cost_aware=False` ignores costs
    (k from acceptance alone: tests that exercise the mechanics with any model pair).
    `min_confidence` > 0: the source ends a proposal itself after a token it is unsure of, so
    a round that pays at all gets `max_draft` as its bound.
    """

    max_draft: int
    min_confidence: float = 0.0
    acceptance: float = 0.6
    alpha: float = 0.3
    probe_after: int = 16
    idle: int = 0
    cost_aware: bool = True

    def update(self, proposed: int, accepted: int) -> None:
        """Record one verified round."""
        if proposed <= 0:
            return
        self.acceptance = (1 - self.alpha) * self.acceptance + self.alpha * accepted / proposed
        self.idle = 0

    def best_length(self, costs: PassCosts, step: float, min_rows: int) -> int:
        """The k with the most expected tokens per unit of cost (0: a plain pass)."""
        if not self.cost_aware:
            return self.max_draft if self.acceptance >= 0.4 else 0
        best_k, best_rate = 0, 1.0 / costs.target(min_rows)
        for k in range(1, self.max_draft + 1):
            cost = costs.target(max(k + 1, min_rows)) + k * step
            rate = expected_tokens(self.acceptance, k) / cost
            if rate > best_rate:
                best_k, best_rate = k, rate
        return best_k

    def length(self, costs: PassCosts, step: float, min_rows: int) -> int:
        """k for this round (0: do not use this source); counts idle rounds towards a probe."""
        if self.max_draft <= 0:
            return 0
        k = self.best_length(costs, step, min_rows)
        if k > 0:
            return self.max_draft if self.min_confidence > 0 else k
        self.idle += 1
        if self.idle > self.probe_after:
            self.idle = 0
            return 1
        return 0


@dataclass
class SpeculationState:
    """What speculation has learned: acceptance per source (lookup, draft model, one-token
    guesses) and the cost of passes. Pass the same state to successive calls (an engine keeps
    one) to carry it across requests."""

    lookup: DraftSource
    draft: DraftSource
    guess: DraftSource
    costs: PassCosts = field(default_factory=PassCosts)

    @classmethod
    def initial(
        cls,
        max_draft: int = 8,
        cost_aware: bool = True,
        max_lookup: int = MAX_LOOKUP,
        draft_min_confidence: float = DRAFT_MIN_CONFIDENCE,
    ) -> SpeculationState:
        """Fresh state: `max_draft` bounds the draft model's k, `max_lookup` a lookup draft's;
        a draft model's proposal ends after a token below `draft_min_confidence` (0: never)."""
        return cls(
            DraftSource(max_lookup, acceptance=0.7, cost_aware=cost_aware),
            DraftSource(
                max_draft,
                acceptance=0.7,
                cost_aware=cost_aware,
                min_confidence=draft_min_confidence,
            ),
            DraftSource(min(1, max_draft), acceptance=GUESS_ACCEPTANCE, cost_aware=cost_aware),
        )

    def source(self, name: str) -> DraftSource:
        """The source called `name`: lookup, draft or guess."""
        return {"lookup": self.lookup, "draft": self.draft, "guess": self.guess}[name]


class _Drafter:
    """The draft model over its own KV cache, kept to a prefix of the accepted sequence."""

    def __init__(self, runner: ModelRunner, cache: KVCache, costs: PassCosts) -> None:
        self.runner = runner
        self.cache = cache
        self.costs = costs
        self.fed = 0  # tokens run through the draft model

    def propose(
        self,
        sequence: list[int],
        k: int,
        config: GenerationConfig,
        rng: np.random.Generator,
        interrupted: Callable[[], str | None],
        min_confidence: float = 0.0,
    ) -> tuple[list[int], list[np.ndarray] | None] | str:
        """Up to k tokens after `sequence` (greedy, or sampled with their distributions q), or
        why it was interrupted; fewer when a token's draft probability is below
        `min_confidence` (that token is the last). Leaves the cache holding
        sequence + drafts[:-1]."""
        started = time.perf_counter()
        cached = reuse_prefix(self.cache, sequence)
        catch_up = len(sequence) - cached
        self.fed += catch_up
        # A round's first pass feeds what the last round accepted (<= k+1 tokens) and drafts
        # one token, then k-1 steps follow: k passes per round, what `record_draft` counts. A
        # cold catch-up (a whole prompt) is no round's cost and is left out.
        timed = catch_up <= k + 1
        logits = prefill(self.runner, self.cache, sequence[cached:], interrupted)
        drafts: list[int] = []
        distributions: list[np.ndarray] | None = None if config.temperature <= 0 else []
        while True:
            if isinstance(logits, str):
                return logits
            row = logits[-1]  # [V]
            if distributions is None:
                token = int(np.argmax(row))
                # The softmax of the top token: 1 / sum(exp(logit - max)).
                confidence = 1.0 / float(np.exp(row - row[token]).sum()) if min_confidence else 1.0
            else:
                q = token_distribution(row, config)
                token = int(rng.choice(q.size, p=q))
                distributions.append(q)
                confidence = float(q[token])
            drafts.append(token)
            if len(drafts) >= k or confidence < min_confidence:
                if timed:
                    self.costs.record_draft(len(drafts), (time.perf_counter() - started) * 1000)
                return drafts, distributions
            reason = interrupted()
            if reason:
                return reason
            logits = self.runner.forward(self.cache, [token])
            self.fed += 1


def _warm_drafter(
    draft: ModelRunner | None,
    draft_cache: KVCache | None,
    prompt: Sequence[int],
    costs: PassCosts,
    max_catch_up: int | None,
) -> _Drafter | None:
    """The draft model over its cache; None without one, or when the cache lacks more than
    `max_catch_up` tokens of the prompt (a cold request: that prefill costs more than it saves).
    """
    if draft is None or draft_cache is None:
        return None
    if max_catch_up is not None and len(prompt) - draft_cache.common_prefix(prompt) > max_catch_up:
        return None
    return _Drafter(draft, draft_cache, costs)


def _room(target_cache: KVCache, drafter: _Drafter | None, length: int, left: int) -> int:
    """Drafts that fit one round after a sequence of `length` tokens with `left` tokens still to
    generate: the verify pass appends k+1 positions, and more than the budget is waste."""
    room = min(target_cache.capacity - target_cache.length - 1, left - 1)
    if drafter is not None:
        room = min(room, drafter.cache.capacity - length + 1)
    return room


@dataclass
class Proposal:
    """One round's drafted tokens: `drafts` from `source` (lookup, draft or guess; "" for none),
    then a lookup `extension` of a draft model's drafts: drafts may run into text seen before,
    and a row costs little. `q_rows`: the draft model's distributions when it sampled."""

    source: str = ""
    drafts: list[int] = field(default_factory=list)
    extension: list[int] = field(default_factory=list)
    q_rows: list[np.ndarray] | None = None

    @property
    def tokens(self) -> list[int]:
        """What the target verifies after the sequence's last token."""
        return [*self.drafts, *self.extension]


def propose(
    sequence: list[int],
    room: int,
    state: SpeculationState,
    drafter: _Drafter | None,
    lookup: bool,
    free_rows: int,
    config: GenerationConfig,
    rng: np.random.Generator,
    interrupted: Callable[[], str | None],
) -> Proposal | str:
    """At most `room` tokens to follow `sequence`: a prompt-lookup match (a tail n-gram of
    length >= 2, >= 3 with a draft model), else the draft model's tokens with a lookup
    extension, else a one-token lookup guess; or why the draft model was interrupted. Each
    source's length comes from `state` (asking counts an idle round towards its probe)."""
    costs = state.costs
    min_ngram = LOOKUP_MIN_NGRAM if drafter is None else LOOKUP_MIN_NGRAM_WITH_DRAFT
    lookup_k = state.lookup.length(costs, 0.0, free_rows) if lookup else 0
    if room <= 0:
        return Proposal()
    if lookup_k > 0:
        drafts, _ = lookup_draft(sequence, min(lookup_k, room), min_ngram)
        if drafts:
            return Proposal("lookup", drafts)
    if drafter is not None:
        k = min(state.draft.length(costs, costs.draft_step(), free_rows), room)
        if k > 0:
            drafted = drafter.propose(
                sequence, k, config, rng, interrupted, state.draft.min_confidence
            )
            if isinstance(drafted, str):
                return drafted
            drafts, q_rows = drafted
            extension_k = min(lookup_k, room - len(drafts))
            extension, _ = lookup_draft([*sequence, *drafts], extension_k, min_ngram)
            return Proposal("draft", drafts, extension, q_rows)
    if lookup:
        k = min(state.guess.length(costs, 0.0, free_rows), room)
        drafts, _ = lookup_draft(sequence, k)
        if drafts:
            return Proposal("guess", drafts)
    return Proposal()


def accept_prefix(
    rows: np.ndarray, proposal: Proposal, config: GenerationConfig, rng: np.random.Generator
) -> tuple[list[int], int]:
    """The longest prefix of the proposal the target agrees with, and the token the target
    emits after it (its correction of the first rejected one, or one past the proposal).
    rows: [k+1, V], row i scoring the token after proposal token i-1. Greedy: agreement is the
    argmax; sampling: the speculative-sampling rule, lookup tokens (the extension included)
    being deterministic proposals."""
    tokens = proposal.tokens
    q_rows = proposal.q_rows or []
    for index, drafted in enumerate(tokens):
        if config.temperature > 0:
            p = token_distribution(rows[index], config)  # [V]
            q = q_rows[index] if index < len(q_rows) else None
            ok, token = speculative_accept(p, drafted, rng, q)
        else:
            token = int(np.argmax(rows[index]))
            ok = token == drafted
        if not ok:
            return tokens[:index], token
    return tokens, sample_token(rows[len(tokens)], config, rng)


def verify(
    target: ModelRunner,
    cache: KVCache,
    last: int,
    proposal: Proposal,
    config: GenerationConfig,
    rng: np.random.Generator,
    costs: PassCosts,
) -> tuple[list[int], int]:
    """One target pass over [last, *proposal.tokens], timed into `costs`: what `accept_prefix`
    says. Leaves `cache` holding the sequence up to `last` and the accepted tokens (not the
    target's own token, which is emitted last)."""
    tokens = proposal.tokens
    base = cache.length  # the sequence except `last`
    started = time.perf_counter()
    rows = target.forward(cache, [last, *tokens], keep=len(tokens) + 1)  # [k+1, V]
    elapsed_ms = (time.perf_counter() - started) * 1000
    costs.record_target(max(len(tokens) + 1, target.min_rows), elapsed_ms)
    accepted, token = accept_prefix(rows, proposal, config, rng)
    # Positions of rejected drafts are garbage now; the last emitted token is never cached.
    cache.truncate(base + 1 + len(accepted))
    return accepted, token


def account(
    stats: SpeculationStats, state: SpeculationState, proposal: Proposal, accepted: int
) -> None:
    """Count one verified round with `accepted` tokens of the proposal taken, and teach the
    sources their acceptance: the drafts' own source, and lookup for an extension the target
    reached (one it did not reach was not verified)."""
    stats.rounds += 1
    stats.extension_proposed += len(proposal.extension)
    if not proposal.drafts:
        return
    drafted = len(proposal.drafts)
    own = min(accepted, drafted)
    if proposal.source == "draft":
        stats.draft_proposed += drafted
        stats.draft_accepted += own
    else:  # a guess is a lookup too
        stats.lookup_proposed += drafted
        stats.lookup_accepted += own
    state.source(proposal.source).update(drafted, own)
    if proposal.extension and own == drafted:
        stats.lookup_proposed += len(proposal.extension)
        stats.lookup_accepted += accepted - own
        stats.extension_accepted += accepted - own
        state.lookup.update(len(proposal.extension), accepted - own)


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
    max_draft: int = 8,
    state: SpeculationState | None = None,
    max_draft_catch_up: int | None = None,
) -> GenerationResult:
    """`generate` with speculation: same contract, same greedy output, same sampling law.

    Each round proposes drafts (`propose`: prompt lookup, else `draft` over `draft_cache`,
    which may hold any prefix of the sequence, e.g. from a PrefixCache of the draft model),
    verifies them in one target pass (`verify`) and counts the round in `result.speculation`
    (`account`). `state` carries the adaptive draft lengths across calls (default: fresh, from
    `max_draft`; lookup up to MAX_LOOKUP). A draft cache that lacks more than
    `max_draft_catch_up` tokens of the prompt (a cold request) leaves the draft model out.
    """
    if draft is not None and draft_cache is None:
        raise ValueError("a draft model needs a draft KV cache")
    start = start_generation(target, target_cache, prompt, config, cancel)
    result, interrupted, logits = start.result, start.interrupted, start.logits
    if logits is None:
        return result
    rng = np.random.default_rng(config.seed)
    stream = TextStream(tokenizer, config, on_text)
    result.token_ids = stream.token_ids
    sequence = list(prompt)  # == prompt + result.token_ids (stop tokens are not kept)
    if state is None:
        state = SpeculationState.initial(max_draft)
    drafter = _warm_drafter(draft, draft_cache, prompt, state.costs, max_draft_catch_up)
    # Rows a target pass costs anyway (see ModelRunner.min_rows): drafts that fill them are free.
    free_rows = max(1, target.min_rows)

    def emit(tokens: list[int]) -> str | None:
        """Push accepted tokens; the finish reason if generation ends with one of them."""
        for token in tokens:
            reason = stream.push(token)
            if token not in stream.stops.stop_ids:
                sequence.append(token)
            if reason:
                return reason
            if len(stream.token_ids) >= config.max_new_tokens:
                return "length"
            # What `generate` checks: its cache then holds everything but this token.
            if len(sequence) - 1 >= target_cache.capacity:
                return "context"
        return None

    reason = emit([sample_token(logits[-1], config, rng)])
    while reason is None:
        reason = interrupted()
        if reason:
            break
        left = config.max_new_tokens - len(stream.token_ids)
        room = _room(target_cache, drafter, len(sequence), left)
        proposal = propose(
            sequence, room, state, drafter, lookup, free_rows, config, rng, interrupted
        )
        if isinstance(proposal, str):
            reason = proposal
            break
        reason = interrupted()
        if reason:
            break
        accepted, token = verify(
            target, target_cache, sequence[-1], proposal, config, rng, state.costs
        )
        account(result.speculation, state, proposal, len(accepted))
        reason = emit([*accepted, token])
        if drafter is not None:
            drafter.cache.truncate(min(drafter.cache.length, len(sequence) - 1))
    if drafter is not None:
        result.speculation.draft_fed = drafter.fed
    # Leave the cache as `generate` would: prompt + generated tokens, minus the last one.
    target_cache.truncate(min(target_cache.length, len(sequence) - (reason != "stop")))
    result.finish_reason = reason
    result.text = stream.finish(reason)
    result.decode_ms = (time.monotonic() - start.done) * 1000
    return result
