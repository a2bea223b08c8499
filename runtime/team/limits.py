"""Per-user request rate of the team server (429 past the configured requests per minute)."""

from __future__ import annotations

import time
from collections import deque

from runtime.team.errors import ApiError


class RateLimiter:
    """Requests per user in a sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}

    def check(self, user: str) -> None:
        """Count one request of `user`; raises ApiError(429) past the limit."""
        now = time.monotonic()
        seen = self._seen.setdefault(user, deque())
        while seen and seen[0] <= now - 60:
            seen.popleft()
        if len(seen) >= self.per_minute:
            retry = max(1, int(seen[0] + 60 - now) + 1)
            raise ApiError(
                429,
                f"rate limit of {self.per_minute} requests per minute reached",
                "rate_limit_error",
                {"Retry-After": str(retry)},
            )
        seen.append(now)
