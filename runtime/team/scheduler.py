"""Scheduling for the team server: a per-user fair queue, supersede by document, KV slots per
(user, repository), and continuous batching with a batched decode step.

One thread runs the model. Each turn it admits queued jobs (round-robin over users) while the
batch has room, feeds every prefilling job one chunk of its prompt, then decodes one token for
every other running job in ONE forward pass over several sequences. Cancellation (a superseded
request, a client that went away) is checked at the start of every turn, so a cancelled job stops
within one decode step.

KV memory is a fixed pool of slots, each one row of a per-layer slab [slots, kv_heads,
window + 1, head_dim] preallocated once (pages are committed as rows are used): the pool is the
memory bound. A slot belongs to a (user, repository) key and keeps that key's last sequence for
prefix reuse; a user holds at most `slots_per_user` slots, and beyond that evicts their own least
recently used one, so one user's typing cannot push everyone else's cache out. Sequences never
share a slot across users.

Batched decode works on the graph `runtime/convert.py` writes: its batch dimension is symbolic and
GroupQueryAttention takes one `seqlens_k` per row, so rows of different lengths decode together
(tested against single-row passes with the tiny model). Rows between active ones that are idle
or still prefilling get a dummy token written at their `length`, a position their cache treats
as garbage (the extra `+ 1` of the slab keeps that position in bounds; a step of one row uses it
for the graph's scratch row instead, which a batch of several rows does not get); rows past the
last active one are not computed at all. On this 2-core CPU a batched step costs little more
than a single one (decode is bound by reading the weights); on a GPU it is what makes a shared
server scale.
Speculative decoding is not used here (it verifies several positions per sequence, which does
not fit a one-token batched step).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from runtime.config import ModelConfig
from runtime.convert import kv_input_names, kv_output_names
from runtime.generate import (
    PREFILL_CHUNK,
    CancellationToken,
    GenerationConfig,
    GenerationResult,
    ModelRunner,
    TextStream,
    interruption_check,
    reuse_prefix,
    sample_token,
)
from runtime.kv_cache import KVCache
from runtime.tokenizer import QwenTokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerOptions:
    """Batch size, KV memory and queue bounds."""

    max_batch: int = 4  # sequences decoded together (1: one at a time)
    context_window: int = 4096  # tokens per slot
    cache_bytes: int = 1 << 30  # the slot pool's budget; slots = max(max_batch, budget // slot)
    slots_per_user: int = 2
    max_queue: int = 64  # queued jobs, all users together
    max_per_user: int = 4  # queued plus running jobs of one user


class Rejected(Exception):
    """The scheduler cannot take the job now (queue full, too many jobs of this user)."""


@dataclass(eq=False)
class Job:
    """One generation request. `on_text` is called from the scheduler thread."""

    user: str
    prompt: list[int]
    config: GenerationConfig
    document: str | None = None  # a newer job with the same (user, document) supersedes this one
    repository: str = ""  # selects the user's KV slot
    on_text: Callable[[str], None] | None = None
    cancel: CancellationToken = field(default_factory=CancellationToken)
    cancel_cause: str | None = None  # "superseded", "disconnected", ...
    future: Future[GenerationResult] = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    first_token_at: float | None = None

    def cancel_for(self, cause: str) -> None:
        """Stop this job at its next step (or before it starts), recording why."""
        if self.cancel_cause is None:
            self.cancel_cause = cause
        self.cancel.cancel()


class RowCache(KVCache):
    """A KVCache whose buffers are one row of a slot slab (no allocation of its own)."""

    def __init__(
        self, keys: list[ort.OrtValue], values: list[ort.OrtValue], capacity: int, nbytes: int
    ) -> None:
        # Deliberately not KVCache.__init__: the buffers exist already (views into the slab).
        self.capacity = capacity
        self.keys = keys
        self.values = values
        self.tokens: list[int] = []
        self.nbytes = nbytes


@dataclass(eq=False)
class Slot:
    """One row of the slab and whose sequence it holds."""

    row: int
    cache: RowCache
    key: tuple[str, str] | None = None
    last_used: int = 0
    pinned: bool = False


class SlotPool:
    """KV rows in per-layer slabs [rows, kv_heads, window + 1, head_dim]; LRU per key and user."""

    def __init__(self, config: ModelConfig, rows: int, window: int, slots_per_user: int) -> None:
        shape = (rows, config.num_kv_heads, window + 1, config.head_dim)
        # np.zeros maps untouched pages lazily: memory is committed as rows fill up.
        self.keys = [np.zeros(shape, dtype=config.kv_dtype) for _ in range(config.num_layers)]
        self.values = [np.zeros(shape, dtype=config.kv_dtype) for _ in range(config.num_layers)]
        per_slot = KVCache.bytes_for(config, window)
        self.slots = [
            Slot(
                row,
                RowCache(
                    [_ortvalue(slab[row : row + 1]) for slab in self.keys],
                    [_ortvalue(slab[row : row + 1]) for slab in self.values],
                    window,
                    per_slot,
                ),
            )
            for row in range(rows)
        ]
        self.slots_per_user = slots_per_user
        self._clock = itertools.count(1)
        self.stats = {"slot_hits": 0, "slot_misses": 0, "slot_evictions": 0}

    @property
    def nbytes(self) -> int:
        """Bytes reserved for all slots."""
        return sum(slab.nbytes for slab in (*self.keys, *self.values))

    def acquire(self, user: str, repository: str, prompt: Sequence[int]) -> Slot | None:
        """Pin a slot for (user, repository): its own if free, else an evicted one; or None."""
        key = (user, repository)
        free = [slot for slot in self.slots if not slot.pinned]
        if not free:
            return None
        own = [slot for slot in free if slot.key == key]
        if own:
            slot = max(own, key=lambda s: (s.cache.common_prefix(prompt), s.last_used))
            self.stats["slot_hits"] += 1
        else:
            self.stats["slot_misses"] += 1
            mine = [slot for slot in free if slot.key is not None and slot.key[0] == user]
            held = sum(1 for slot in self.slots if slot.key is not None and slot.key[0] == user)
            unused = [slot for slot in free if slot.key is None]
            if held >= self.slots_per_user and mine:
                slot = min(mine, key=lambda s: s.last_used)  # the user's own LRU slot
            elif unused:
                slot = min(unused, key=lambda s: s.row)  # low rows keep batched steps short
            else:
                slot = min(free, key=lambda s: s.last_used)
            if slot.key is not None:
                self.stats["slot_evictions"] += 1
            slot.key = key
            slot.cache.truncate(0)
        slot.pinned = True
        slot.last_used = next(self._clock)
        return slot

    def release(self, slot: Slot) -> None:
        """Unpin a slot; its sequence stays for the key's next request."""
        slot.pinned = False
        slot.last_used = next(self._clock)


def _ortvalue(array: np.ndarray) -> ort.OrtValue:
    """An OrtValue over `array` without copying it."""
    # A contiguous view: the OrtValue shares its memory with the slab.
    assert array.flags["C_CONTIGUOUS"]
    return ort.OrtValue.ortvalue_from_numpy(array)


class BatchDecoder:
    """One decode step for several slots at once: input_ids [k, 1] over slab rows [0, k)."""

    def __init__(self, runner: ModelRunner, pool: SlotPool) -> None:
        self.runner = runner
        self.pool = pool
        self._bindings: dict[int, ort.IOBinding] = {}

    def _binding(self, rows: int) -> ort.IOBinding:
        """The IO binding of a step over slab rows [0, rows), built once per row count."""
        binding = self._bindings.get(rows)
        if binding is None:
            binding = self.runner.session.io_binding()
            binding.bind_output("logits")
            for layer in range(self.runner.config.num_layers):
                for slab, past, present in zip(
                    (self.pool.keys[layer], self.pool.values[layer]),
                    kv_input_names(layer),
                    kv_output_names(layer),
                    strict=True,
                ):
                    value = _ortvalue(slab[:rows])  # [k, kv_heads, window + 1, head_dim]
                    binding.bind_ortvalue_input(past, value)
                    binding.bind_ortvalue_output(present, value)
            self._bindings[rows] = binding
        return binding

    def step(self, slots: Sequence[Slot], tokens: Sequence[int]) -> np.ndarray:
        """Feed tokens[i] after slots[i]'s sequence; logits [len(slots), vocab] in that order."""
        rows = max(slot.row for slot in slots) + 1
        by_row = {slot.row: token for slot, token in zip(slots, tokens, strict=True)}
        # Idle rows below `rows` write a dummy token at their length: garbage, never read.
        lengths = [self.pool.slots[row].cache.length for row in range(rows)]
        feeds = {
            "input_ids": np.array([[by_row.get(row, 0)] for row in range(rows)], np.int64),
            "seqlens_k": np.array(lengths, dtype=np.int32),  # [k]: valid length - 1 after
            "total_sequence_length": np.array(max(lengths) + 1, dtype=np.int32),
            "logits_to_keep": np.array([1], dtype=np.int64),
        }
        binding = self._binding(rows)
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output("logits")
        self.runner.session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()[:, -1]  # [k, V]
        for slot, token in zip(slots, tokens, strict=True):
            slot.cache.append([token])
        return logits[[slot.row for slot in slots]]


class FairQueue:
    """Jobs per user, served round-robin: a user with many requests waits for the others."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, deque[Job]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._users.values())

    def push(self, job: Job) -> None:
        """Queue `job` behind its user's earlier jobs."""
        self._users.setdefault(job.user, deque()).append(job)

    def pop(self) -> Job | None:
        """The next user's oldest job; that user goes to the back of the line."""
        for user, jobs in self._users.items():
            job = jobs.popleft()
            del self._users[user]
            if jobs:
                self._users[user] = jobs
            return job
        return None

    def remove_if(self, predicate: Callable[[Job], bool]) -> list[Job]:
        """Take out (and return) every queued job matching `predicate`."""
        removed = []
        for user in list(self._users):
            jobs = self._users[user]
            kept = deque(job for job in jobs if not predicate(job))
            removed += [job for job in jobs if predicate(job)]
            if kept:
                self._users[user] = kept
            else:
                del self._users[user]
        return removed

    def count(self, user: str) -> int:
        """Queued jobs of `user`."""
        return len(self._users.get(user, ()))


@dataclass(eq=False)
class _Running:
    """A job on a slot: prompt still to feed, or decoding one token per turn."""

    job: Job
    slot: Slot
    pending: list[int]
    result: GenerationResult
    stream: TextStream
    rng: np.random.Generator
    interrupted: Callable[[], str | None]
    next_token: int | None = None
    prefill_done: float | None = None


class Scheduler:
    """Runs jobs on one model: fair admission, chunked prefill, batched decode, cancellation."""

    def __init__(
        self, runner: ModelRunner, tokenizer: QwenTokenizer, options: SchedulerOptions
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.options = options
        per_slot = KVCache.bytes_for(runner.config, options.context_window)
        rows = max(options.max_batch, options.cache_bytes // per_slot)
        self.pool = SlotPool(runner.config, rows, options.context_window, options.slots_per_user)
        self.decoder = BatchDecoder(runner, self.pool)
        self.queue = FairQueue()
        self.running: list[_Running] = []
        self.stats = {
            "admitted": 0,
            "superseded": 0,
            "batched_steps": 0,
            "batched_rows": 0,
            "single_steps": 0,
        }
        self._cond = threading.Condition(threading.RLock())
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- called from any thread

    def submit(self, job: Job) -> Future[GenerationResult]:
        """Queue `job`; a job of the same (user, document) still queued or running is cancelled.

        Raises Rejected when the queue or the user's share is full.
        """
        if len(job.prompt) == 0:
            raise ValueError("empty prompt")
        if len(job.prompt) >= self.options.context_window:
            raise ValueError(
                f"prompt of {len(job.prompt)} tokens exceeds the window of "
                f"{self.options.context_window - 1}"
            )
        with self._cond:
            if job.document is not None:
                self._supersede(job)
            mine = self.queue.count(job.user) + sum(r.job.user == job.user for r in self.running)
            if mine >= self.options.max_per_user:
                raise Rejected(f"user has {mine} requests in flight")
            if len(self.queue) >= self.options.max_queue:
                raise Rejected("the server's queue is full")
            self.queue.push(job)
            self._cond.notify()
        return job.future

    def submit_many(self, jobs: Sequence[Job]) -> list[Future[GenerationResult]]:
        """Queue several jobs at once, so that they can start in the same turn."""
        with self._cond:
            return [self.submit(job) for job in jobs]

    @property
    def queue_depth(self) -> int:
        """Jobs waiting to start."""
        return len(self.queue)

    @property
    def active(self) -> int:
        """Jobs running now."""
        return len(self.running)

    def close(self) -> None:
        """Stop the thread; queued and running jobs end cancelled."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _supersede(self, job: Job) -> None:
        """Cancel the queued and running jobs of `job`'s (user, document) (holding the lock)."""

        def same(other: Job) -> bool:
            return other.user == job.user and other.document == job.document

        for old in self.queue.remove_if(same):
            old.cancel_for("superseded")
            self.stats["superseded"] += 1
            _resolve(old, GenerationResult([], "", "cancelled", len(old.prompt), 0))
        for running in list(self.running):
            if same(running.job):
                running.job.cancel_for("superseded")
                self.stats["superseded"] += 1

    # ----------------------------------------------------------------- the model thread

    def _loop(self) -> None:
        """The model thread: admit and run turns until closed, then cancel what is left."""
        while True:
            with self._cond:
                if self._stopping:
                    break
                self._admit()
                if not self.running:
                    self._cond.wait(timeout=1.0)
                    continue
            try:
                self._turn()
            except Exception as error:  # a bug: fail the jobs in flight, keep serving
                logger.exception("scheduler turn failed")
                for running in list(self.running):
                    self._end(running, error=error)
        with self._cond:
            for running in list(self.running):
                running.job.cancel_for("shutdown")
                self._end(running, "cancelled")
            for job in self.queue.remove_if(lambda _: True):
                _resolve(job, GenerationResult([], "", "cancelled", len(job.prompt), 0))

    def _admit(self) -> None:
        """Start queued jobs while the batch has room (holding the lock)."""
        while len(self.running) < self.options.max_batch:
            job = self.queue.pop()
            if job is None:
                return
            slot = self.pool.acquire(job.user, job.repository, job.prompt)
            assert slot is not None, "the pool has at least max_batch slots"
            job.started_at = time.monotonic()
            cached = reuse_prefix(slot.cache, job.prompt)
            deadline = None if job.config.timeout_s is None else job.config.timeout_s
            self.running.append(
                _Running(
                    job,
                    slot,
                    job.prompt[cached:],
                    GenerationResult([], "", "length", len(job.prompt), cached),
                    TextStream(self.tokenizer, job.config, job.on_text),
                    np.random.default_rng(job.config.seed),
                    interruption_check(
                        job.cancel, None if deadline is None else job.started_at + deadline
                    ),
                )
            )
            self.stats["admitted"] += 1

    def _turn(self) -> None:
        """Cancellations, one prefill chunk per prefilling job, one batched decode step."""
        self._end_interrupted()
        for running in [r for r in self.running if r.pending]:
            chunk, running.pending = (
                running.pending[:PREFILL_CHUNK],
                running.pending[PREFILL_CHUNK:],
            )
            logits = self.runner.forward(running.slot.cache, chunk)  # [1, V]
            if not running.pending:
                running.prefill_done = time.monotonic()
                assert running.job.started_at is not None
                running.result.prefill_ms = (running.prefill_done - running.job.started_at) * 1e3
                self._accept(running, logits[-1])
        self._end_interrupted()  # a prefill chunk takes a while: look again before decoding
        decoding = [r for r in self.running if not r.pending and r.next_token is not None]
        if not decoding:
            return
        tokens = [r.next_token for r in decoding if r.next_token is not None]
        if len(decoding) == 1:
            # One sequence: its own binding, no idle rows computed.
            rows = self.runner.forward(decoding[0].slot.cache, tokens)[-1:]
            self.stats["single_steps"] += 1
        else:
            rows = self.decoder.step([r.slot for r in decoding], tokens)
            self.stats["batched_steps"] += 1
            self.stats["batched_rows"] += len(decoding)
        for running, logits in zip(decoding, rows, strict=True):
            self._accept(running, logits)

    def _end_interrupted(self) -> None:
        """End the running jobs that were cancelled or ran past their deadline."""
        for running in list(self.running):
            reason = running.interrupted()
            if reason:
                self._end(running, reason)

    def _accept(self, running: _Running, logits: np.ndarray) -> None:
        """Sample from logits [V]; end the job on a stop rule, else feed the token next turn."""
        token = sample_token(logits, running.job.config, running.rng)
        if running.job.first_token_at is None:
            running.job.first_token_at = time.monotonic()
        reason = running.stream.push(token)
        if reason is None and len(running.stream.token_ids) >= running.job.config.max_new_tokens:
            reason = "length"
        cache = running.slot.cache
        if reason is None and cache.length >= cache.capacity:
            reason = "context"
        if reason:
            self._end(running, reason)
        else:
            running.next_token = token

    def _end(self, running: _Running, reason: str = "", error: BaseException | None = None) -> None:
        """Finish a job: release its slot and resolve its future."""
        if running in self.running:
            self.running.remove(running)
        self.pool.release(running.slot)
        if error is not None:
            running.job.future.set_exception(error)
            return
        result = running.result
        result.finish_reason = reason
        result.token_ids = running.stream.token_ids
        if running.prefill_done is not None:
            try:
                result.text = running.stream.finish(reason)
            except Exception:  # on_text raised (a closed client): the text is still right
                logger.debug("on_text failed at the end of a job", exc_info=True)
                result.text = running.stream.text
            result.decode_ms = (time.monotonic() - running.prefill_done) * 1e3
        _resolve(running.job, result)


def _resolve(job: Job, result: GenerationResult) -> None:
    """Give `job` its result unless it already has one."""
    if not job.future.done():
        job.future.set_result(result)
