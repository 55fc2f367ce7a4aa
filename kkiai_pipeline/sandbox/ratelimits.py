"""The API's rate limits, as a per-minute window for each class of endpoint.

The API allows 600 creates and 3000 other calls a minute and reports the state of the caller's budget
on every response in ``ratelimit-remaining`` and ``ratelimit-reset`` (seconds until it refills). The
sandbox keeps one fixed window per class: it opens at the first call, lasts 60 s, and the next call
after it opens the next one. Calls over the limit are still counted; they are refused with the API's
429 only when ``enforce_rate_limits`` is set. Unlike the API, no burst above the limit is tolerated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Bucket = Literal["create", "other"]

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Quota:
    """The state of a bucket right after one call was taken from it."""

    remaining: int
    reset: int
    exceeded: bool

    def headers(self) -> dict[str, str]:
        """The ``ratelimit-*`` headers that report this state."""
        return rate_limit_headers(remaining=self.remaining, reset=self.reset)


class _Window:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.opened = -math.inf
        self.used = 0

    def take(self, now: float) -> Quota:
        if now >= self.opened + WINDOW_SECONDS:
            self.opened, self.used = now, 0
        self.used += 1
        reset = max(1, math.ceil(self.opened + WINDOW_SECONDS - now))
        return Quota(remaining=max(0, self.limit - self.used), reset=reset, exceeded=self.used > self.limit)


class RateLimiter:
    """One window per bucket: ``create`` for creates, ``other`` for every other API call."""

    def __init__(self, *, create_per_minute: int, other_per_minute: int, clock: Callable[[], float]) -> None:
        self._limits: dict[Bucket, int] = {"create": create_per_minute, "other": other_per_minute}
        self._clock = clock
        self._windows = {bucket: _Window(limit) for bucket, limit in self._limits.items()}

    def take(self, bucket: Bucket) -> Quota:
        """Counts one call against ``bucket``; O(1)."""
        return self._windows[bucket].take(self._clock())

    def reset(self) -> None:
        """Starts every bucket afresh."""
        self._windows = {bucket: _Window(limit) for bucket, limit in self._limits.items()}


def rate_limit_headers(*, remaining: int, reset: int) -> dict[str, str]:
    """The API's ``ratelimit-remaining`` and ``ratelimit-reset`` (seconds) headers."""
    return {"ratelimit-remaining": str(remaining), "ratelimit-reset": str(reset)}
