"""The engine's mechanics on a tiny random Qwen2: exact agreement with transformers, prefix
reuse, cancellation, deadlines, sampling and stop rules."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from runtime.config import NUMERICS_PROBE, PRECISIONS, ModelConfig
from runtime.convert import quantize_blockwise, quantize_per_channel
from runtime.engine import WARM_CHUNK, EngineOptions, LocalEngine
from runtime.generate import (
    PREFILL_CHUNK,
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    ModelRunner,
)
from runtime.kv_cache import KVCache, PrefixCache
from runtime.numerics import exact_min_rows
from runtime.session import ProviderError, SessionOptions, choose_providers, create_session
from runtime.tokenizer import QwenTokenizer

# Long enough to run the prefill in two chunks.
PROMPT = [int(token) for token in np.random.default_rng(7).integers(0, 150000, PREFILL_CHUNK + 44)]


def make_engine(
    onnx_dir: Path, tokenizer: QwenTokenizer, cache_bytes: int = 1 << 30
) -> LocalEngine:
    """A LocalEngine over an ONNX directory, without the registry."""
    return LocalEngine(
        load_runner(onnx_dir),
        tokenizer,
        EngineOptions(context_window=1024, cache_bytes=cache_bytes).without_speculation(),
    )


def load_runner(directory: Path, min_rows: int = 1) -> ModelRunner:
    """A runner over a converted directory; passes padded to `min_rows` rows."""
    config = ModelConfig.load(directory / "config.json")
    session = create_session(directory / "model.onnx", SessionOptions())
    return ModelRunner(session, config, min_rows=min_rows)


@pytest.fixture
def engine(tiny_onnx: Path, qwen_tokenizer: QwenTokenizer) -> LocalEngine:
    """A fresh engine (empty KV caches) on the tiny model."""
    return make_engine(tiny_onnx, qwen_tokenizer)


def transformers_greedy(checkpoint: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Reference: transformers' own greedy decoding of the same checkpoint."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.Qwen2ForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        output = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return [int(token) for token in output[0, len(prompt) :]]


def test_greedy_equals_transformers_token_for_token(
    engine: LocalEngine, tiny_checkpoint: Path
) -> None:
    result = engine.complete(PROMPT, GenerationConfig(max_new_tokens=24))
    assert result.finish_reason == "length"
    assert result.token_ids == transformers_greedy(tiny_checkpoint, PROMPT, 24)


def test_cached_prefix_run_equals_fresh_run(
    engine: LocalEngine, tiny_onnx: Path, qwen_tokenizer: QwenTokenizer
) -> None:
    config = GenerationConfig(max_new_tokens=16)
    engine.complete(PROMPT, config)
    edited = [*PROMPT[:-5], 11, 12, 13]  # the user changed the last few tokens
    reused = engine.complete(edited, config)
    fresh = make_engine(tiny_onnx, qwen_tokenizer).complete(edited, config)
    assert reused.cached_tokens == len(PROMPT) - 5
    assert fresh.cached_tokens == 0
    assert reused.token_ids == fresh.token_ids


def test_identical_prompt_recomputes_only_the_last_position(engine: LocalEngine) -> None:
    config = GenerationConfig(max_new_tokens=8)
    first = engine.complete(PROMPT, config)
    again = engine.complete(PROMPT, config)
    assert again.cached_tokens == len(PROMPT) - 1
    assert again.token_ids == first.token_ids


def test_cancellation_stops_within_one_step(engine: LocalEngine) -> None:
    cancel = CancellationToken()
    pieces: list[str] = []

    def cancel_after_first_piece(piece: str) -> None:
        pieces.append(piece)
        cancel.cancel()

    result = engine.complete(
        PROMPT, GenerationConfig(max_new_tokens=32), cancel, cancel_after_first_piece
    )
    assert result.finish_reason == "cancelled"
    # The token whose text triggered the cancel is the last one: no further forward pass ran.
    assert result.generated_tokens <= 2
    assert engine.cache.nbytes > 0


def test_cancelled_before_start_runs_nothing(engine: LocalEngine) -> None:
    cancel = CancellationToken()
    cancel.cancel()
    result = engine.complete(PROMPT, GenerationConfig(), cancel)
    assert (result.finish_reason, result.generated_tokens) == ("cancelled", 0)


def test_a_generation_goes_before_the_rest_of_a_warm_up(engine: LocalEngine) -> None:
    """A warm-up reads its prompt a chunk per hold of the engine; a generation that asks while
    a chunk runs gets the engine next, not after the whole warm-up."""
    long_prompt = [int(t) for t in np.random.default_rng(3).integers(0, 150000, 5 * WARM_CHUNK)]
    forward, order = engine.runner.forward, []
    first_chunk = threading.Event()

    def recording(cache: KVCache, tokens: Sequence[int], keep: int = 1) -> np.ndarray:
        warm = threading.current_thread().name == "warm"
        if warm and not first_chunk.is_set():
            first_chunk.set()
            queued_by = time.monotonic() + 10  # hold the first chunk until the generation waits
            while not engine._waiting and time.monotonic() < queued_by:
                time.sleep(0.001)
        order.append("warm" if warm else "generation")
        return forward(cache, tokens, keep)

    engine.runner.forward = recording  # type: ignore[method-assign]
    warm_up = threading.Thread(target=engine.prefill, args=(long_prompt,), name="warm")
    warm_up.start()
    assert first_chunk.wait(10)
    engine.complete(PROMPT, GenerationConfig(max_new_tokens=2))
    warm_up.join(10)
    assert order[0] == "warm" and order[1] == "generation"
    assert order.count("warm") == 5 and engine.cache.longest_prefix(long_prompt) == len(long_prompt)


def test_deadline_is_respected(engine: LocalEngine) -> None:
    def slow_consumer(_: str) -> None:
        time.sleep(0.05)

    result = engine.complete(
        PROMPT, GenerationConfig(max_new_tokens=200, timeout_s=0.3), on_text=slow_consumer
    )
    assert result.finish_reason == "deadline"
    assert 0 < result.generated_tokens < 200


def test_seeded_sampling_is_reproducible_and_top_p_tiny_is_greedy(engine: LocalEngine) -> None:
    sampled = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=3)
    assert engine.complete(PROMPT, sampled).token_ids == engine.complete(PROMPT, sampled).token_ids
    nucleus = GenerationConfig(max_new_tokens=12, temperature=0.7, top_p=1e-9, seed=5)
    greedy = GenerationConfig(max_new_tokens=12)
    assert engine.complete(PROMPT, nucleus).token_ids == engine.complete(PROMPT, greedy).token_ids


def test_stop_string_cuts_text(engine: LocalEngine) -> None:
    full = engine.complete(PROMPT, GenerationConfig(max_new_tokens=12))
    assert len(full.text) > 4
    marker = full.text[2:4]
    pieces: list[str] = []
    stopped = engine.complete(
        PROMPT, GenerationConfig(max_new_tokens=12, stop_strings=(marker,)), on_text=pieces.append
    )
    assert stopped.finish_reason == "stop_string"
    assert stopped.text == full.text[: full.text.find(marker)]
    # Streaming never showed text that the stop string later took back.
    assert "".join(pieces) == stopped.text


def test_streamed_text_equals_final_text(engine: LocalEngine) -> None:
    pieces: list[str] = []
    result: GenerationResult = engine.complete(
        PROMPT, GenerationConfig(max_new_tokens=16), on_text=pieces.append
    )
    assert "".join(pieces) == result.text


def test_the_line_being_written_streams_only_when_asked(engine: LocalEngine) -> None:
    def never(text: str) -> None:
        return None

    streamed: dict[bool, list[str]] = {}  # the text streamed so far, after each piece
    for unfinished in (False, True):
        pieces: list[str] = []
        seen = streamed[unfinished] = []

        def on_text(piece: str, pieces: list[str] = pieces, seen: list[str] = seen) -> None:
            pieces.append(piece)
            seen.append("".join(pieces))

        config = GenerationConfig(
            max_new_tokens=16, stop_rule=never, stream_unfinished_line=unfinished
        )
        result = engine.complete(PROMPT, config, on_text=on_text)
        assert "".join(pieces) == result.text
    # A stop rule judges whole lines: by default only whole lines stream before the end.
    assert all(text.endswith("\n") for text in streamed[False][:-1])
    assert any(not text.endswith("\n") for text in streamed[True][:-1])


def test_prompt_longer_than_window_is_refused(engine: LocalEngine) -> None:
    with pytest.raises(ValueError, match="exceeds the window"):
        engine.complete(list(range(2000)), GenerationConfig())


def test_prefix_cache_keeps_sequences_within_its_byte_budget(tiny_config: ModelConfig) -> None:
    one_cache = KVCache.bytes_for(tiny_config, 64)
    caches = PrefixCache(tiny_config, 64, max_bytes=2 * one_cache, min_shared_tokens=4)
    first, _ = caches.acquire(list(range(10)))
    first.append(list(range(10)))
    second, shared = caches.acquire(list(range(100, 110)))
    assert second is not first and shared == 0
    second.append(list(range(100, 110)))
    # Back to the first file: its cache is still warm.
    again, shared = caches.acquire([*range(10), 42])
    assert again is first and shared == 10
    # A third unrelated sequence: over budget, so the least recently used cache is recycled.
    third, shared = caches.acquire(list(range(200, 210)))
    assert third is second and shared == 0
    assert caches.nbytes == 2 * one_cache


def test_a_sequence_leaving_a_cached_one_far_from_its_end_forks_it(tiny_onnx: Path) -> None:
    runner = load_runner(tiny_onnx)
    one_cache = KVCache.bytes_for(runner.config, 64)
    caches = PrefixCache(
        runner.config, 64, max_bytes=2 * one_cache, min_shared_tokens=4, fork_tokens=8
    )
    held, other = PROMPT[:40], [*PROMPT[:20], *PROMPT[30:35]]  # leaves `held` 20 before its end
    first, _ = caches.acquire(held)
    runner.forward(first, held)
    fork, shared = caches.acquire(other)
    assert fork is not first and shared == 20 and first.length == 40
    # The copied prefix scores as the original does: `other` in the fork = `other` from scratch.
    assert np.array_equal(
        runner.forward(fork, other[20:]), runner.forward(KVCache(runner.config, 64), other)
    )
    again, shared = caches.acquire([*held, 7])
    assert again is first and shared == 40
    assert np.array_equal(
        runner.forward(again, [7]), runner.forward(KVCache(runner.config, 64), [*held, 7])
    )
    assert caches.nbytes == 2 * one_cache
    # Over budget, leaving the least recently used cache far from its end truncates it in
    # place, as does a short divergence from the end of any.
    third, shared = caches.acquire([*held[:10], 5, 5])
    assert third is fork and shared == 10 and first.length == 41
    in_place, shared = caches.acquire([*held, 7, 9])
    assert in_place is first and shared == 41
    # Leaving the most recent far from its end, over budget: the least recent is the copy.
    copy, shared = caches.acquire([*held[:30], 1])
    assert copy is fork and shared == 30 and first.length == 41


def test_caches_made_and_freed_in_turn_each_score_their_own_sequence(tiny_onnx: Path) -> None:
    # Caches come and go (one per request); a new one must never run on a freed one's buffers,
    # whatever address it gets (a short cache's buffers cannot hold a long prompt).
    runner = load_runner(tiny_onnx)
    short, long = PROMPT[:8], PROMPT[:40]
    expected = {8: runner.forward(KVCache(runner.config, 8), short)}
    expected[64] = runner.forward(KVCache(runner.config, 64), long)
    addresses = set()
    for round_ in range(40):
        capacity = 8 if round_ % 2 else 64
        cache = KVCache(runner.config, capacity)
        addresses.add(id(cache))
        got = runner.forward(cache, short if capacity == 8 else long)
        assert np.array_equal(got, expected[capacity])
        del cache
    assert len(addresses) < 40  # addresses were reused: the case under test happened


def test_kv_cache_overflow_is_an_error(tiny_config: ModelConfig) -> None:
    cache = KVCache(tiny_config, 8)
    with pytest.raises(ValueError, match="overflow"):
        cache.append(list(range(9)))


def test_a_cache_filled_to_capacity_scores_as_a_larger_one(tiny_onnx: Path) -> None:
    # The last position's pass writes the graph's scratch row into the spare slot past the
    # capacity: it must neither fail nor disturb what the full cache holds.
    runner = load_runner(tiny_onnx)
    prompt = PROMPT[:12]
    exact_fit = KVCache(runner.config, len(prompt))
    runner.forward(exact_fit, prompt[:-1])
    last = runner.forward(exact_fit, prompt[-1:])
    roomy = KVCache(runner.config, 64)
    assert np.array_equal(last, runner.forward(roomy, prompt))
    assert exact_fit.length == exact_fit.capacity
    with pytest.raises(ValueError, match="exceeds"):
        runner.forward(exact_fit, [1])


@pytest.mark.parametrize("bits", [4, 8])
def test_blockwise_quantization_error_is_within_half_a_step(bits: int) -> None:
    weight = np.random.default_rng(0).normal(size=(8, 80)).astype(np.float32)  # K not a multiple
    packed, scales, zero_points = quantize_blockwise(weight, bits)
    blocks = scales.size // 8
    if bits == 4:
        values = np.stack([packed & 15, packed >> 4], axis=-1).reshape(8, blocks, -1)
        zero = np.stack([zero_points & 15, zero_points >> 4], axis=-1).reshape(8, -1)[:, :blocks]
    else:
        values, zero = packed, zero_points.reshape(8, blocks)
    restored = (values - zero[:, :, None].astype(np.float32)) * scales.reshape(8, blocks, 1)
    restored = restored.reshape(8, -1)[:, :80]
    step = np.repeat(scales.reshape(8, blocks), 32, axis=1)[:, :80]
    assert np.all(np.abs(restored - weight) <= step / 2 + 1e-6)


def test_per_channel_quantization_error_is_within_half_a_step() -> None:
    weight = np.random.default_rng(4).standard_normal((6, 40)).astype(np.float32)
    weight[2] = 0.0  # an all-zero channel stays exact
    quantized, scales = quantize_per_channel(weight)
    assert quantized.shape == (40, 6) and quantized.dtype == np.int8
    restored = quantized.T.astype(np.float32) * scales[:, None]
    assert np.all(np.abs(restored - weight) <= scales[:, None] / 2 + 1e-6)
    assert np.all(restored[2] == 0.0)


@pytest.fixture(scope="module")
def converted(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint converted at every precision: <dir>/<precision>/model.onnx."""
    from runtime.convert import convert_to_onnx
    from runtime.weights import open_weight_source

    root = tmp_path_factory.mktemp("precisions")
    for precision in PRECISIONS:
        with open_weight_source(tiny_checkpoint) as source:
            convert_to_onnx(source, root / precision, precision)
    return root


def test_quantized_models_stay_close_to_fp32(converted: Path) -> None:
    logits = {}
    for precision in ("fp32", "int8", "w8a8", "int4"):
        runner = load_runner(converted / precision)
        logits[precision] = runner.forward(KVCache(runner.config, 64), PROMPT[:20])
    scale = np.abs(logits["fp32"]).max()
    assert np.abs(logits["int8"] - logits["fp32"]).max() < 0.02 * scale
    assert np.abs(logits["w8a8"] - logits["fp32"]).max() < 0.05 * scale
    assert np.abs(logits["int4"] - logits["fp32"]).max() < 0.2 * scale


@pytest.mark.parametrize("precision", ["int4", "w8a8"])
def test_padded_steps_score_exactly_what_one_pass_scores(converted: Path, precision: str) -> None:
    # The prompt in one pass, in two chunks, and one token at a time padded to two rows (as the
    # engine decodes quantized models) must give the same logits bit for bit: what makes
    # speculative and prefix-reusing greedy output identical to plain greedy output.
    runner = load_runner(converted / precision, min_rows=2)
    prompt = PROMPT[:12]
    whole = runner.forward(KVCache(runner.config, 64), prompt, keep=len(prompt))
    chunked_cache = KVCache(runner.config, 64)
    runner.forward(chunked_cache, prompt[:5])
    chunked = runner.forward(chunked_cache, prompt[5:], keep=7)
    stepped_cache = KVCache(runner.config, 64)
    stepped = np.stack([runner.forward(stepped_cache, [token])[0] for token in prompt])
    assert np.array_equal(whole[5:], chunked)
    assert np.array_equal(whole, stepped)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_row_steps_score_exactly_what_one_pass_scores_where_the_kernels_allow(
    converted: Path, precision: str
) -> None:
    # The graph's scratch row makes attention row-independent; where the probe finds the
    # matrix products row-independent too, the engine decodes one row at a time (min_rows=1),
    # and that must still match a whole pass bit for bit.
    runner = load_runner(converted / precision)
    if exact_min_rows(runner.session, converted / precision) != 1:
        pytest.skip(f"{precision} kernels round a lone row differently here: the engine pads")
    prompt = PROMPT[:12]
    whole = runner.forward(KVCache(runner.config, 64), prompt, keep=len(prompt))
    stepped_cache = KVCache(runner.config, 64)
    stepped = np.stack([runner.forward(stepped_cache, [token])[0] for token in prompt])
    assert np.array_equal(whole, stepped)


def test_a_model_converted_without_the_kernel_probe_is_padded(
    converted: Path, tmp_path: Path
) -> None:
    runner = load_runner(converted / "int4")
    assert (converted / "int4" / NUMERICS_PROBE).is_file()  # the converter writes it
    assert exact_min_rows(runner.session, tmp_path) == 2  # a directory without one


@pytest.mark.parametrize("precision", ["w8a8", "int4"])
def test_parallel_prepacking_changes_no_logit(converted: Path, precision: str) -> None:
    # Weights packed on all threads at load (the default) must run exactly as packed on one.
    logits = []
    for parallel in (False, True):
        session = create_session(
            converted / precision / "model.onnx", SessionOptions(parallel_prepack=parallel)
        )
        runner = ModelRunner(session, ModelConfig.load(converted / precision / "config.json"))
        logits.append(runner.forward(KVCache(runner.config, 64), PROMPT[:20], keep=20))
    assert np.array_equal(logits[0], logits[1])


def test_provider_choice() -> None:
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", available) == available
    assert choose_providers("cuda", available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="not in this onnxruntime build"):
        choose_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="not one of"):
        choose_providers("gpu", available)
