"""Speculative decoding on tiny random Qwen2 models: greedy output identical to plain decoding
(draft = target, an unrelated draft, prompt lookup), KV caches left exact, the sampling rule's
law, cancellation and stop strings."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from runtime.config import ModelConfig
from runtime.engine import EngineOptions, LocalEngine
from runtime.generate import (
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    ModelRunner,
    SpeculationStats,
    generate,
)
from runtime.kv_cache import KVCache
from runtime.session import SessionOptions, create_session
from runtime.speculative import (
    DraftSource,
    PassCosts,
    SpeculationState,
    _Drafter,
    expected_tokens,
    lookup_draft,
    speculative_accept,
    speculative_generate,
)
from runtime.tokenizer import QwenTokenizer

CAPACITY = 256
PROMPT = [int(token) for token in np.random.default_rng(7).integers(0, 150000, 120)]


def load_runner(onnx_dir: Path) -> ModelRunner:
    """A ModelRunner over an ONNX directory, one thread (benchmarks share this machine)."""
    config = ModelConfig.load(onnx_dir / "config.json")
    return ModelRunner(create_session(onnx_dir / "model.onnx", SessionOptions(threads=1)), config)


@pytest.fixture(scope="module")
def target(tiny_onnx: Path) -> ModelRunner:
    """The tiny model as the target."""
    return load_runner(tiny_onnx)


@pytest.fixture(scope="module")
def unrelated(tiny_draft_onnx: Path) -> ModelRunner:
    """A different random model as the draft."""
    return load_runner(tiny_draft_onnx)


def random_prompts(count: int) -> list[list[int]]:
    """Prompts of random length; every other one repeats a short motif, for prompt lookup."""
    rng = np.random.default_rng(11)
    prompts = []
    for index in range(count):
        length = int(rng.integers(4, 60))
        if index % 2:
            motif = rng.integers(0, 150000, int(rng.integers(3, 8)))
            tokens = np.resize(motif, length)
            tokens[rng.integers(0, length, 2)] = rng.integers(0, 150000, 2)  # a few edits
        else:
            tokens = rng.integers(0, 150000, length)
        prompts.append([int(token) for token in tokens])
    return prompts


def plain(
    runner: ModelRunner, tokenizer: QwenTokenizer, prompt: list[int], config: GenerationConfig
) -> GenerationResult:
    return generate(runner, tokenizer, KVCache(runner.config, CAPACITY), prompt, config)


def speculate(
    target: ModelRunner,
    draft: ModelRunner | None,
    tokenizer: QwenTokenizer,
    prompt: list[int],
    config: GenerationConfig,
    **options: bool | int,
) -> tuple[GenerationResult, KVCache]:
    cache = KVCache(target.config, CAPACITY)
    draft_cache = None if draft is None else KVCache(draft.config, CAPACITY)
    # Not cost-aware: a tiny draft costs as much as its target, and these tests are about the
    # mechanics of every draft length, not about whether speculation pays.
    state = SpeculationState.initial(int(options.pop("max_draft", 4)), cost_aware=False)
    result = speculative_generate(
        target,
        draft,
        tokenizer,
        cache,
        draft_cache,
        prompt,
        config,
        state=state,
        **options,  # type: ignore[arg-type]
    )
    return result, cache


@pytest.mark.parametrize(
    "setting", ["self_draft", "unrelated_draft", "lookup_only", "self_draft_lookup"]
)
def test_greedy_equals_plain_greedy(
    setting: str,
    target: ModelRunner,
    unrelated: ModelRunner,
    qwen_tokenizer: QwenTokenizer,
) -> None:
    draft = {"unrelated_draft": unrelated, "lookup_only": None}.get(setting, target)
    config = GenerationConfig(max_new_tokens=24)
    totals = SpeculationStats()
    for prompt in random_prompts(50):
        expected = plain(target, qwen_tokenizer, prompt, config)
        result, _ = speculate(
            target, draft, qwen_tokenizer, prompt, config, lookup="lookup" in setting
        )
        assert result.token_ids == expected.token_ids, prompt
        assert (result.text, result.finish_reason) == (expected.text, expected.finish_reason)
        totals += result.speculation
    if setting == "self_draft":
        assert totals.draft_proposed > 200
        assert totals.draft_accepted >= 0.98 * totals.draft_proposed
    elif setting == "self_draft_lookup":
        # The tiny model repeats itself: lookup finds a continuation of the accepted drafts.
        assert totals.draft_proposed > 0 and totals.extension_proposed > 0
        assert totals.lookup_accepted > 0
    elif setting == "unrelated_draft":
        assert totals.draft_proposed > 0
        assert totals.draft_accepted < 0.5 * totals.draft_proposed
    else:
        assert totals.draft_proposed == 0
        assert totals.lookup_proposed > 0 and totals.lookup_accepted > 0


@pytest.mark.parametrize("setting", ["self_draft", "unrelated_draft", "lookup_only"])
def test_caches_match_a_fresh_prefill(
    setting: str,
    target: ModelRunner,
    unrelated: ModelRunner,
    qwen_tokenizer: QwenTokenizer,
) -> None:
    draft = {"self_draft": target, "unrelated_draft": unrelated, "lookup_only": None}[setting]
    for prompt in random_prompts(6):
        # Lookup on (the default) in every setting: with a draft model, extensions ride along.
        result, cache = speculate(target, draft, qwen_tokenizer, prompt, GenerationConfig(40))
        # As after `generate`: the prompt and every generated token but the last (never fed).
        assert cache.tokens == [*prompt, *result.token_ids[:-1]]
        probe = [result.token_ids[-1], 42]
        from_speculation = target.forward(cache, probe, keep=2)
        fresh = KVCache(target.config, CAPACITY)
        target.forward(fresh, cache.tokens[: -len(probe)])
        from_scratch = target.forward(fresh, probe, keep=2)
        np.testing.assert_allclose(from_speculation, from_scratch, rtol=1e-4, atol=1e-4)


def test_reused_caches_give_the_same_output(
    target: ModelRunner, unrelated: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    config = GenerationConfig(max_new_tokens=16)
    cache, draft_cache = KVCache(target.config, CAPACITY), KVCache(unrelated.config, CAPACITY)
    first = speculative_generate(
        target, unrelated, qwen_tokenizer, cache, draft_cache, PROMPT, config
    )
    edited = [*PROMPT[:-5], 11, 12, 13]
    reused = speculative_generate(
        target, unrelated, qwen_tokenizer, cache, draft_cache, edited, config
    )
    assert reused.cached_tokens == len(PROMPT) - 5
    assert reused.token_ids == plain(target, qwen_tokenizer, edited, config).token_ids
    assert first.token_ids == plain(target, qwen_tokenizer, PROMPT, config).token_ids


def total_variation(samples: list[int], p: np.ndarray) -> float:
    empirical = np.bincount(samples, minlength=p.size) / len(samples)
    return float(np.abs(empirical - p).sum() / 2)


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([0.5, 0.2, 0.15, 0.1, 0.05, 0.0], [0.1, 0.1, 0.5, 0.1, 0.1, 0.1]),
        ([0.05, 0.05, 0.3, 0.3, 0.3, 0.0], [0.6, 0.3, 0.1, 0.0, 0.0, 0.0]),
        ([0.2, 0.2, 0.2, 0.2, 0.2, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2, 0.0]),  # p == q
    ],
)
def test_acceptance_rule_keeps_the_target_distribution(p: list[float], q: list[float]) -> None:
    rng = np.random.default_rng(0)
    target, draft = np.array(p), np.array(q)
    trials = 20000
    samples, accepted = [], 0
    for _ in range(trials):
        proposed = int(rng.choice(draft.size, p=draft))
        ok, token = speculative_accept(target, proposed, rng, draft)
        samples.append(token)
        accepted += ok
    assert total_variation(samples, target) < 0.02
    # Acceptance probability of the rule is sum(min(p, q)).
    assert abs(accepted / trials - np.minimum(target, draft).sum()) < 0.02


@pytest.mark.parametrize("proposed", [0, 3, 5])  # a likely, an unlikely, an impossible token
def test_acceptance_rule_for_deterministic_lookup_drafts(proposed: int) -> None:
    rng = np.random.default_rng(1)
    target = np.array([0.5, 0.2, 0.15, 0.1, 0.05, 0.0])
    results = [speculative_accept(target, proposed, rng) for _ in range(20000)]
    assert total_variation([token for _, token in results], target) < 0.02
    assert abs(np.mean([ok for ok, _ in results]) - target[proposed]) < 0.02


def test_sampling_is_seeded_and_top_p_tiny_is_greedy(
    target: ModelRunner, unrelated: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    sampled = GenerationConfig(max_new_tokens=16, temperature=1.0, seed=3)
    for draft in (target, unrelated, None):
        first, _ = speculate(target, draft, qwen_tokenizer, PROMPT, sampled)
        again, _ = speculate(target, draft, qwen_tokenizer, PROMPT, sampled)
        assert first.token_ids == again.token_ids and len(first.token_ids) == 16
    nucleus = GenerationConfig(max_new_tokens=16, temperature=0.7, top_p=1e-9, seed=5)
    greedy = plain(target, qwen_tokenizer, PROMPT, GenerationConfig(max_new_tokens=16))
    result, _ = speculate(target, target, qwen_tokenizer, PROMPT, nucleus)
    assert result.token_ids == greedy.token_ids
    # Self-drafting at temperature > 0: q == p, so (nearly) every draft is accepted.
    self_sampled, _ = speculate(target, target, qwen_tokenizer, PROMPT, sampled, lookup=False)
    speculation = self_sampled.speculation
    assert speculation.draft_proposed > 0
    assert speculation.draft_accepted >= 0.9 * speculation.draft_proposed


def test_without_any_draft_source_sampling_equals_generate(
    target: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    config = GenerationConfig(max_new_tokens=16, temperature=0.8, top_p=0.9, seed=9)
    result, _ = speculate(target, None, qwen_tokenizer, PROMPT, config, lookup=False)
    assert result.token_ids == plain(target, qwen_tokenizer, PROMPT, config).token_ids
    assert result.speculation.rounds == 15


def test_cancellation_stops_within_one_round(
    target: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    cancel = CancellationToken()
    cache, draft_cache = KVCache(target.config, CAPACITY), KVCache(target.config, CAPACITY)
    forwards = 0
    original = target.forward

    def counting_forward(kv: KVCache, tokens: list[int], keep: int = 1) -> np.ndarray:
        nonlocal forwards
        forwards += 1
        return original(kv, tokens, keep)

    def cancel_on_first_piece(_: str) -> None:
        cancel.cancel()

    target.forward = counting_forward  # type: ignore[method-assign]
    try:
        result = speculative_generate(
            target,
            target,
            qwen_tokenizer,
            cache,
            draft_cache,
            PROMPT,
            GenerationConfig(max_new_tokens=32),
            cancel,
            cancel_on_first_piece,
        )
    finally:
        del target.forward
    assert result.finish_reason == "cancelled"
    # Target prefill; no forward pass of either model after the first text was streamed.
    assert forwards == 1
    assert result.generated_tokens == 1
    assert cache.tokens == PROMPT


def test_cancelled_before_start_runs_nothing(
    target: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    cancel = CancellationToken()
    cancel.cancel()
    cache = KVCache(target.config, CAPACITY)
    result = speculative_generate(
        target, target, qwen_tokenizer, cache, KVCache(target.config, CAPACITY), PROMPT,
        GenerationConfig(), cancel,
    )  # fmt: skip
    assert (result.finish_reason, result.generated_tokens, cache.length) == ("cancelled", 0, 0)


@pytest.mark.parametrize("draft_name", ["target", "unrelated", "none"])
def test_stop_string_and_streaming_match_generate(
    draft_name: str,
    target: ModelRunner,
    unrelated: ModelRunner,
    qwen_tokenizer: QwenTokenizer,
) -> None:
    draft = {"target": target, "unrelated": unrelated, "none": None}[draft_name]
    full = plain(target, qwen_tokenizer, PROMPT, GenerationConfig(max_new_tokens=16))
    assert len(full.text) > 6
    marker = full.text[4:6]
    config = GenerationConfig(max_new_tokens=16, stop_strings=(marker,))
    plain_pieces: list[str] = []
    expected = generate(
        target,
        qwen_tokenizer,
        KVCache(target.config, CAPACITY),
        PROMPT,
        config,
        on_text=plain_pieces.append,
    )
    pieces: list[str] = []
    cache = KVCache(target.config, CAPACITY)
    draft_cache = None if draft is None else KVCache(draft.config, CAPACITY)
    stopped = speculative_generate(
        target, draft, qwen_tokenizer, cache, draft_cache, PROMPT, config, on_text=pieces.append
    )
    assert stopped.finish_reason == expected.finish_reason == "stop_string"
    assert stopped.text == expected.text == full.text[: full.text.find(marker)]
    assert stopped.token_ids == expected.token_ids
    assert pieces == plain_pieces
    assert cache.tokens == [*PROMPT, *stopped.token_ids[:-1]]


def test_stop_rule_and_length_match_generate(
    target: ModelRunner, unrelated: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    def cut_at_third_char(text: str) -> int | None:
        return 3 if len(text) > 3 else None

    for config in (
        GenerationConfig(max_new_tokens=9, stop_rule=cut_at_third_char),
        GenerationConfig(max_new_tokens=1),
        GenerationConfig(max_new_tokens=7),
    ):
        expected = plain(target, qwen_tokenizer, PROMPT, config)
        result, _ = speculate(target, unrelated, qwen_tokenizer, PROMPT, config)
        assert (result.token_ids, result.text, result.finish_reason) == (
            expected.token_ids,
            expected.text,
            expected.finish_reason,
        )


def test_context_limit_is_respected(target: ModelRunner, qwen_tokenizer: QwenTokenizer) -> None:
    config = GenerationConfig(max_new_tokens=64)
    prompt = PROMPT[:100]
    expected = generate(target, qwen_tokenizer, KVCache(target.config, 110), prompt, config)
    cache = KVCache(target.config, 110)
    result = speculative_generate(
        target, target, qwen_tokenizer, cache, KVCache(target.config, 110), prompt, config
    )
    assert result.finish_reason == expected.finish_reason == "context"
    assert result.token_ids == expected.token_ids


def test_lookup_draft_prefers_the_longest_most_recent_ngram() -> None:
    sequence = [1, 2, 3, 9, 9, 5, 2, 3, 7, 8, 1, 2, 3]
    # Tail [1, 2, 3] occurs at 0 (followed by 9, 9, 5); [2, 3] is more recent but shorter.
    assert lookup_draft(sequence, 3) == ([9, 9, 5], 3)
    assert lookup_draft([4, 2, 3, 7, 8, 5, 2, 3], 4) == ([7, 8, 5, 2], 2)
    assert lookup_draft([4, 2, 3, 7, 8, 5, 6, 3], 2) == ([7, 8], 1)
    assert lookup_draft([4, 2, 3, 7, 8, 5, 6, 3], 2, min_ngram=2) == ([], 0)
    assert lookup_draft([1, 2, 3], 4) == ([], 0)
    assert lookup_draft([5, 5], 4) == ([5], 1)
    assert lookup_draft([1, 2, 3, 1, 2], 0) == ([], 0)


def test_expected_tokens_per_round() -> None:
    assert expected_tokens(1.0, 3) == 4
    assert expected_tokens(0.0, 3) == 1
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_pass_costs_scale_unmeasured_row_counts_from_measured_ones() -> None:
    costs = PassCosts()
    assert costs.target(2) == pytest.approx(1.10)  # the prior, in units of one row
    costs.record_target(2, 33.0)
    assert costs.target(2) == 33.0
    assert costs.target(1) == pytest.approx(30.0)
    assert costs.draft_step() == pytest.approx(0.35 * 30.0)
    costs.record_draft(3, 30.0)
    assert costs.draft_step() == pytest.approx(10.0)


def test_draft_length_follows_acceptance_and_cost() -> None:
    costs = PassCosts({1: 30.0, 2: 33.0, 3: 37.5, 4: 45.6, 5: 48.3})
    draft = DraftSource(max_draft=4, acceptance=0.9)
    cheap, dear = 10.0, 30.0
    assert draft.length(costs, cheap, min_rows=1) >= 2  # accepted often, drafts cheap: speculate
    assert draft.length(costs, dear, min_rows=1) == 0  # a draft as dear as the target never pays
    # A free lookup draft fills the row a two-row pass computes anyway.
    assert DraftSource(max_draft=4, acceptance=0.1).length(costs, 0.0, min_rows=2) >= 1
    for _ in range(10):
        draft.update(4, 0)
    assert draft.acceptance < 0.1
    # Idle at 0: after probe_after rounds the source gets a 1-token probe.
    ks = [draft.length(costs, cheap, min_rows=1) for _ in range(draft.probe_after + 1)]
    assert ks[-1] == 1 and set(ks[:-1]) == {0}


def test_a_confident_draft_source_gets_its_whole_bound() -> None:
    costs = PassCosts({1: 30.0, 2: 33.0, 3: 37.5, 4: 45.6, 5: 48.3})
    # It pays (k = 1 at least): the bound is max_draft, the draft model's confidence ends it.
    assert DraftSource(max_draft=8, acceptance=0.9, min_confidence=0.8).length(costs, 10.0, 1) == 8
    assert 0 < DraftSource(max_draft=8, acceptance=0.9).length(costs, 10.0, 1) < 8
    # It does not pay: no draft at all, confident or not.
    assert DraftSource(max_draft=8, acceptance=0.9, min_confidence=0.8).length(costs, 30.0, 1) == 0


def test_draft_proposal_ends_after_the_first_unsure_token(target: ModelRunner) -> None:
    config = GenerationConfig()
    prompt = PROMPT[:40]

    def propose(min_confidence: float) -> list[int]:
        drafter = _Drafter(target, KVCache(target.config, CAPACITY), PassCosts())
        proposal = drafter.propose(
            prompt, 6, config, np.random.default_rng(0), lambda: None, min_confidence
        )
        assert not isinstance(proposal, str)
        return proposal[0]

    full = propose(0.0)
    assert len(full) == 6
    # The draft model's probability of each of its greedy tokens, from one fresh pass.
    cache = KVCache(target.config, CAPACITY)
    target.forward(cache, prompt[:-1])
    rows = target.forward(cache, [prompt[-1], *full[:-1]], keep=6).astype(np.float64)
    probabilities = np.exp(rows - rows.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    confidence = probabilities[np.arange(6), full]
    unsure = int(np.argmin(confidence[:5]))  # the proposal must end right after this token
    above = [value for value in confidence[:unsure] if value > confidence[unsure]]
    threshold = (confidence[unsure] + min(above, default=1.0)) / 2
    assert propose(threshold) == full[: unsure + 1]
    assert propose(1.01) == full[:1]  # every token is below 1.01


def test_one_token_guesses_run_where_a_second_row_is_cheap() -> None:
    guess = SpeculationState.initial().guess  # 1-gram lookup guesses, 20 % acceptance at first
    integer_gemm = PassCosts({1: 30.0, 2: 31.5})  # w8a8 here: a second row costs 5 %
    int4_kernel = PassCosts({1: 30.0, 2: 45.0})  # a kernel whose second row costs 50 %
    assert guess.length(integer_gemm, 0.0, min_rows=1) == 1
    assert guess.length(int4_kernel, 0.0, min_rows=1) == 0
    assert guess.length(int4_kernel, 0.0, min_rows=2) == 1  # a padded pass: the row is free


def test_engine_with_draft_and_lookup_matches_the_plain_engine(
    target: ModelRunner, unrelated: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    options = EngineOptions(context_window=512, lookup=True, max_draft=3, max_draft_catch_up=512)
    speculative = LocalEngine(target, qwen_tokenizer, options, draft=unrelated)
    baseline = LocalEngine(
        target, qwen_tokenizer, EngineOptions(context_window=512).without_speculation()
    )
    config = GenerationConfig(max_new_tokens=20)
    edited = [*PROMPT[:-5], 11, 12, 13]
    for prompt in (PROMPT, edited, PROMPT):
        result = speculative.complete(prompt, config)
        assert result.token_ids == baseline.complete(prompt, config).token_ids
        assert result.speculation.rounds > 0
    # The draft model's cache is reused across requests like the target's.
    assert speculative.draft_cache is not None
    _, shared = speculative.draft_cache.acquire(PROMPT)
    assert shared >= len(PROMPT) - 5


class StopAt:
    """A runner that makes the model predict <|endoftext|> for sequence position `position`."""

    def __init__(self, runner: ModelRunner, stop_id: int, position: int) -> None:
        self.runner, self.config, self.min_rows = runner, runner.config, runner.min_rows
        self.stop_id, self.position = stop_id, position

    def forward(self, cache: KVCache, tokens: list[int], keep: int = 1) -> np.ndarray:
        before = cache.length
        logits = self.runner.forward(cache, tokens, keep).copy()
        for row in range(keep):
            # Row `row` scores the token after input position before + len(tokens) - keep + row.
            if before + len(tokens) - keep + row + 1 == self.position:
                logits[row, self.stop_id] = 1e4
        return logits


@pytest.mark.parametrize("lookup", [False, True])
def test_stop_token_mid_round_matches_generate(
    lookup: bool, target: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    stop_id = qwen_tokenizer.token_id("<|endoftext|>")
    stopping = StopAt(target, stop_id, len(PROMPT) + 6)
    config = GenerationConfig(max_new_tokens=32)
    plain_cache = KVCache(target.config, CAPACITY)
    expected = generate(stopping, qwen_tokenizer, plain_cache, PROMPT, config)  # type: ignore[arg-type]
    assert (expected.finish_reason, expected.generated_tokens) == ("stop", 6)
    cache = KVCache(target.config, CAPACITY)
    result = speculative_generate(
        stopping,  # type: ignore[arg-type]
        stopping,  # type: ignore[arg-type]
        qwen_tokenizer,
        cache,
        KVCache(target.config, CAPACITY),
        PROMPT,
        config,
        lookup=lookup,
    )
    assert (result.token_ids, result.finish_reason) == (expected.token_ids, "stop")
    if not lookup:  # the draft proposed the stop token and it was accepted mid-round
        assert result.speculation.draft_accepted == result.speculation.draft_proposed > 0
    assert cache.tokens == plain_cache.tokens == [*PROMPT, *result.token_ids]


def test_deadline_is_respected(target: ModelRunner, qwen_tokenizer: QwenTokenizer) -> None:
    def slow_consumer(_: str) -> None:
        time.sleep(0.05)

    config = GenerationConfig(max_new_tokens=200, timeout_s=0.3)
    result = speculative_generate(
        target,
        target,
        qwen_tokenizer,
        KVCache(target.config, 512),
        KVCache(target.config, 512),
        PROMPT,
        config,
        on_text=slow_consumer,
    )
    assert result.finish_reason == "deadline"
    assert 0 < result.generated_tokens < 200


def test_cold_draft_cache_is_skipped_over_the_catch_up_limit(
    target: ModelRunner, unrelated: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    config = GenerationConfig(max_new_tokens=12)
    result, _ = speculate(
        target, unrelated, qwen_tokenizer, PROMPT, config, lookup=False, max_draft_catch_up=16
    )
    assert result.speculation.draft_fed == result.speculation.draft_proposed == 0
    assert result.token_ids == plain(target, qwen_tokenizer, PROMPT, config).token_ids
