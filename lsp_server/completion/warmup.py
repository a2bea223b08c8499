"""Warming the KV cache while the user types.

A pause answered from the forward cache (the user typed what the last suggestion predicted)
runs no model, so the engine's cache still holds the prompt of the last model call. If the next
pause is a miss, its prompt can share little with that one: at the start of a line the prompt
is in Qwen's PSM order, a pause inside the line leads the middle with the typed line (see
`context/prompt.py`), and the suffix after the switch must be read again (~130 tokens, ~200 ms
on the 0.5B, ~700 ms on the 1.5B here). So after each forward-cache answer the prompt of the
buffer as it is now is prefilled in the background, while the user types on: the next model
call then pays only for what was typed since. A real request cancels a warm-up in progress
before its next forward pass; a newer warm-up replaces an older one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from runtime.generate import CancellationToken

logger = logging.getLogger(__name__)

WarmJob = Callable[[CancellationToken], None]


class CacheWarmer:
    """One background warm-up at a time, each cancelling the one before."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-cache")
        self._lock = threading.Lock()
        self._cancel: CancellationToken | None = None
        self._pending: Future[None] | None = None
        self.started = 0  # warm-ups submitted, for logs and tests

    def start(self, job: WarmJob) -> None:
        """Run `job` in the background with a fresh cancellation token, cancelling the last."""
        token = CancellationToken()
        with self._lock:
            if self._cancel is not None:
                self._cancel.cancel()
            self._cancel = token
            self._pending = self._executor.submit(_run, job, token)
            self.started += 1

    def stop(self) -> None:
        """Cancel the warm-up in progress, if any (a request that needs the model is here)."""
        with self._lock:
            if self._cancel is not None:
                self._cancel.cancel()

    def wait(self) -> None:
        """Block until the last warm-up has finished (benchmarks and tests)."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            pending.result()


def _run(job: WarmJob, token: CancellationToken) -> None:
    """`job`, unless cancelled before it began; a failure is logged, never raised (warming is
    an optimization: the request that needs the prompt builds it again and reports errors)."""
    if token.cancelled:
        return
    try:
        job(token)
    except Exception:
        logger.debug("cache warm-up failed", exc_info=True)
