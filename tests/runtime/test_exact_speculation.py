"""Speculation on the real 0.5B (int4 and w8a8): every pass scores a token alike (the graph
gives attention a scratch row; one-row passes are padded to two only where this machine's
kernels need it, `runtime.numerics`), so a decode step scores exactly what a verify pass scores,
and speculative greedy output is token for token the plain greedy output (prompt lookup, and
the model drafting for itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import models
from runtime.generate import GenerationConfig, ModelRunner, SpeculationStats, generate
from runtime.kv_cache import KVCache
from runtime.numerics import exact_min_rows
from runtime.session import SessionOptions, create_session
from runtime.speculative import SpeculationState, speculative_generate
from runtime.tokenizer import QwenTokenizer

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder-0.5b"
CAPACITY = 2048
SOURCES = [Path(np.__file__).parent / "lib" / "_function_base_impl.py", Path(__file__)]


@pytest.fixture(scope="module", params=["int4", "w8a8"])
def real(request: pytest.FixtureRequest) -> tuple[ModelRunner, QwenTokenizer]:
    """The embedded 0.5B at both quantized precisions, padded as the engine pads it."""
    prepared = models.prepare(MODEL, request.param, progress=False)
    session = create_session(prepared.onnx_path, SessionOptions())
    runner = ModelRunner(session, prepared.config, exact_min_rows(session, prepared.directory))
    return runner, QwenTokenizer.load(prepared.directory)


def code_prompts(tokenizer: QwenTokenizer, count: int) -> list[list[int]]:
    """FIM prompts cut from real source files at line starts."""
    prompts = []
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        starts = [index + 1 for index, char in enumerate(text) if char == "\n"]
        for offset in starts[40 : 40 + 97 * (count // len(SOURCES)) : 97]:
            segments = [
                ("<|fim_prefix|>", True),
                (text[max(0, offset - 1500) : offset], False),
                ("<|fim_suffix|>", True),
                (text[offset : offset + 400], False),
                ("<|fim_middle|>", True),
            ]
            prompts.append(tokenizer.encode_segments(segments))
    return prompts


def test_a_decode_step_scores_exactly_what_a_verify_pass_scores(
    real: tuple[ModelRunner, QwenTokenizer],
) -> None:
    runner, tokenizer = real
    tokens = code_prompts(tokenizer, 2)[0]
    base = len(tokens) - 6
    stepped = KVCache(runner.config, CAPACITY)
    runner.forward(stepped, tokens[:base])
    step_rows = [runner.forward(stepped, [token])[0] for token in tokens[base:]]
    assert stepped.tokens == tokens  # the padding row left nothing behind
    verified = KVCache(runner.config, CAPACITY)
    runner.forward(verified, tokens[: base - 100])  # and chunking does not matter either
    runner.forward(verified, tokens[base - 100 : base])
    pass_rows = runner.forward(verified, tokens[base:], keep=6)
    for step_row, pass_row in zip(step_rows, pass_rows, strict=True):
        assert np.array_equal(step_row, pass_row)


@pytest.mark.parametrize(
    ("draft_is_target", "nucleus"),
    [(False, False), (True, False), (True, True)],
    ids=["lookup", "self_draft_lookup", "self_draft_lookup_nucleus"],
)
def test_speculative_greedy_equals_plain_greedy_on_the_real_model(
    draft_is_target: bool, nucleus: bool, real: tuple[ModelRunner, QwenTokenizer]
) -> None:
    runner, tokenizer = real
    # A one-token nucleus samples the argmax: the sampling path (the rejection rule, lookup
    # tokens as deterministic proposals) must give the greedy output too.
    config = (
        GenerationConfig(max_new_tokens=40, temperature=0.7, top_p=1e-9, seed=3)
        if nucleus
        else GenerationConfig(max_new_tokens=40)
    )
    totals = SpeculationStats()
    for prompt in code_prompts(tokenizer, 6):
        expected = generate(runner, tokenizer, KVCache(runner.config, CAPACITY), prompt, config)
        result = speculative_generate(
            runner,
            runner if draft_is_target else None,
            tokenizer,
            KVCache(runner.config, CAPACITY),
            KVCache(runner.config, CAPACITY) if draft_is_target else None,
            prompt,
            config,
            lookup=True,
            max_draft_catch_up=CAPACITY,
            # Every draft length, whether or not it pays: this is about exactness.
            state=SpeculationState.initial(4, cost_aware=False),
        )
        assert result.token_ids == expected.token_ids
        totals += result.speculation
    assert 0 < totals.accepted <= totals.proposed
    if draft_is_target:
        # The draft model's tokens were extended by lookup, and the target turned some down.
        assert 0 < totals.extension_accepted < totals.extension_proposed
