"""Per-document debounce and cancellation for completion requests.

A newer request for a document supersedes the older one: the older one's generation is told to
stop (its CancellationToken), and if it was still waiting out the debounce it never starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from runtime.generate import CancellationToken

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Superseded(Exception):
    """A newer request for the same document arrived: this one's result is not wanted."""


class DocumentScheduler:
    """Runs one piece of work per document at a time, the latest one, after a quiet period."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._tickets: dict[str, int] = {}
        self._tokens: dict[str, CancellationToken] = {}

    def cancel(self, key: str) -> None:
        """Stop whatever runs or waits for `key` (the document closed, say)."""
        self._tickets[key] = self._tickets.get(key, 0) + 1
        token = self._tokens.pop(key, None)
        if token is not None:
            token.cancel()

    async def run(self, key: str, delay_s: float, work: Callable[[CancellationToken], T]) -> T:
        """Wait `delay_s`, then run `work(token)` in the executor unless superseded meanwhile.

        Raises Superseded when a newer call for `key` arrived first; cancelling the awaiting
        task (LSP $/cancelRequest) cancels the token, so generation stops at its next step.
        """
        self.cancel(key)
        ticket = self._tickets[key]
        token = CancellationToken()
        self._tokens[key] = token
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if self._tickets.get(key) != ticket:
                raise Superseded(key)
            result = await asyncio.get_running_loop().run_in_executor(self._executor, work, token)
            if self._tickets.get(key) != ticket:
                raise Superseded(key)
            return result
        except asyncio.CancelledError:
            token.cancel()
            raise
        finally:
            if self._tokens.get(key) is token:
                del self._tokens[key]
