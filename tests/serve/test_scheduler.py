"""The team server's scheduler on the tiny random Qwen2: batched decode gives exactly what
one-sequence `generate` gives, supersede, cancellation within a step, fairness, KV slots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.config import ModelConfig
from runtime.generate import GenerationConfig, GenerationResult, ModelRunner, generate
from runtime.kv_cache import KVCache
from runtime.session import SessionOptions, create_session
from runtime.team.scheduler import Job, Rejected, Scheduler, SchedulerOptions, SlotPool
from runtime.tokenizer import QwenTokenizer

WINDOW = 256
GREEDY = GenerationConfig(max_new_tokens=12)


@pytest.fixture(scope="module")
def runner(tiny_onnx: Path) -> ModelRunner:
    """The tiny model on one thread."""
    session = create_session(tiny_onnx / "model.onnx", SessionOptions(provider="cpu", threads=1))
    return ModelRunner(session, ModelConfig.load(tiny_onnx / "config.json"))


def make_scheduler(
    runner: ModelRunner, tokenizer: QwenTokenizer, **options: int
) -> Iterator[Scheduler]:
    """A scheduler over the tiny model, closed afterwards."""
    defaults = {"context_window": WINDOW, "cache_bytes": 1, "max_batch": 3}
    scheduler = Scheduler(runner, tokenizer, SchedulerOptions(**{**defaults, **options}))
    yield scheduler
    scheduler.close()


@pytest.fixture
def scheduler(runner: ModelRunner, qwen_tokenizer: QwenTokenizer) -> Iterator[Scheduler]:
    """Batches of up to 3 sequences, 3 slots."""
    yield from make_scheduler(runner, qwen_tokenizer)


def reference(runner: ModelRunner, tokenizer: QwenTokenizer, prompt: list[int]) -> list[int]:
    """Greedy tokens of one sequence alone, in a fresh cache."""
    cache = KVCache(runner.config, WINDOW)
    return generate(runner, tokenizer, cache, prompt, GREEDY).token_ids


def prompts(tokenizer: QwenTokenizer) -> dict[str, list[int]]:
    """Three prompts of different lengths, one per user."""
    return {
        "ann": tokenizer.encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n"),
        "ben": tokenizer.encode("import os\n"),
        "cat": tokenizer.encode("class Stack:\n    def __init__(self):\n        self.items = []\n"),
    }


def run_all(scheduler: Scheduler, jobs: list[Job]) -> list[GenerationResult]:
    """Queue `jobs` together and wait for all of them."""
    return [future.result(timeout=120) for future in scheduler.submit_many(jobs)]


def test_batched_decode_matches_single_sequences(
    scheduler: Scheduler, runner: ModelRunner, qwen_tokenizer: QwenTokenizer
) -> None:
    by_user = prompts(qwen_tokenizer)
    expected = {user: reference(runner, qwen_tokenizer, p) for user, p in by_user.items()}
    results = run_all(scheduler, [Job(user, p, GREEDY) for user, p in by_user.items()])
    assert scheduler.stats["batched_steps"] > 0
    assert {user: r.token_ids for user, r in zip(by_user, results, strict=True)} == expected

    # Rows 0 and 2 decode together while row 1 (ben's slot) idles between them, then ben's
    # sequence is reused: neither the idle row's dummy writes nor the batch change any token.
    before = scheduler.stats["batched_steps"]
    again = run_all(scheduler, [Job(u, by_user[u] + [13], GREEDY) for u in ("ann", "cat")])
    assert scheduler.stats["batched_steps"] > before
    for user, result in zip(("ann", "cat"), again, strict=True):
        assert result.token_ids == reference(runner, qwen_tokenizer, by_user[user] + [13])
        assert result.cached_tokens == len(by_user[user])
    (ben,) = run_all(scheduler, [Job("ben", by_user["ben"], GREEDY)])
    assert ben.token_ids == expected["ben"]
    assert ben.cached_tokens == len(by_user["ben"]) - 1


def test_newer_request_for_the_same_document_supersedes(
    scheduler: Scheduler, qwen_tokenizer: QwenTokenizer
) -> None:
    prompt = qwen_tokenizer.encode("x = 1\n")
    old = Job("ann", prompt, GenerationConfig(max_new_tokens=200), document="a.py")
    other = Job("ann", prompt, GREEDY, document="b.py")
    new = Job("ann", prompt, GREEDY, document="a.py")
    results = run_all(scheduler, [old, other, new])
    assert results[0].finish_reason == "cancelled" and old.cancel_cause == "superseded"
    assert results[1].finish_reason != "cancelled" and other.cancel_cause is None
    assert results[2].finish_reason != "cancelled"


def test_cancellation_stops_within_one_decode_step(
    scheduler: Scheduler, qwen_tokenizer: QwenTokenizer
) -> None:
    pieces: list[str] = []

    def on_text(text: str) -> None:
        pieces.append(text)
        job.cancel_for("disconnected")

    job = Job("ann", qwen_tokenizer.encode("def f():\n"), GenerationConfig(max_new_tokens=100))
    job.on_text = on_text
    (result,) = run_all(scheduler, [job])
    assert result.finish_reason == "cancelled"
    assert len(pieces) == 1  # nothing was decoded after the cancellation
    assert result.text == pieces[0]
    assert result.generated_tokens < 100


def test_users_are_served_round_robin(runner: ModelRunner, qwen_tokenizer: QwenTokenizer) -> None:
    for scheduler in make_scheduler(runner, qwen_tokenizer, max_batch=1, max_per_user=8):
        prompt = qwen_tokenizer.encode("y = 2\n")
        jobs = [Job("ann", prompt, GREEDY) for _ in range(3)] + [Job("ben", prompt, GREEDY)]
        run_all(scheduler, jobs)
        order = sorted(jobs, key=lambda job: job.started_at or 0)
        assert [job.user for job in order] == ["ann", "ben", "ann", "ann"]


def test_limits_reject_jobs(runner: ModelRunner, qwen_tokenizer: QwenTokenizer) -> None:
    for scheduler in make_scheduler(runner, qwen_tokenizer, max_per_user=2, max_queue=3):
        prompt = qwen_tokenizer.encode("z = 3\n")
        slow = GenerationConfig(max_new_tokens=200)
        jobs = [Job("ann", prompt, slow, document=str(i)) for i in range(2)]
        scheduler.submit_many(jobs)
        with pytest.raises(Rejected, match="in flight"):
            scheduler.submit(Job("ann", prompt, slow))
        with pytest.raises(ValueError, match="window"):
            scheduler.submit(Job("ben", [1] * WINDOW, slow))
        for job in jobs:
            job.cancel_for("test")


def test_slots_are_per_user_and_repository(tiny_config: ModelConfig) -> None:
    pool = SlotPool(tiny_config, rows=4, window=32, slots_per_user=2)
    prompt = [1, 2, 3]

    def use(user: str, repository: str) -> int:
        slot = pool.acquire(user, repository, prompt)
        assert slot is not None
        slot.cache.append(prompt)
        pool.release(slot)
        return slot.row

    bens = use("ben", "r")
    first, second = use("ann", "r1"), use("ann", "r2")
    assert use("ann", "r1") == first and pool.stats["slot_hits"] == 1
    # ann holds her share: a third repository evicts her own least recently used slot
    # (r2), never ben's, even though a slot is still unused.
    assert use("ann", "r3") == second
    assert use("ben", "r") == bens
    assert pool.stats["slot_evictions"] == 1
    # Another user with the same repository name never gets ann's slot.
    assert use("cat", "r1") not in (first, second, bens)
