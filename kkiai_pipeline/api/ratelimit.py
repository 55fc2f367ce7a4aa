"""Client-side rate limits, so that large runs stay under the API's limits instead of hitting 429.

The API allows 600 creates a minute and 3000 other calls a minute per account, with short bursts above
that. Each :class:`TokenBucket` hands out *reservations*: :meth:`TokenBucket.reserve` books the next free
slot under a ``threading.Lock`` and returns how long the caller must sleep before sending (the caller
sleeps with ``asyncio.sleep``, outside the lock). Nothing in a bucket belongs to an event loop, so clients
on different loops in different threads can share one. A caller cancelled while it sleeps loses its slot,
which only ever makes the limiter slower, never faster.

Sharing. :func:`shared_limits` returns one :class:`RateLimits` pair per ``(base_url, rates, burst)`` for
the whole process, so every ``PredictionsClient`` talking to the same API with the same settings draws
from the same buckets.

Across processes the buckets of :mod:`.ratescope` keep the same GCRA state elsewhere: in a file under
the cache directory (processes on one machine) or in a Ray actor (the jobs of a Ray cluster). They
implement :class:`Bucket` like :class:`TokenBucket` and share its arithmetic (:func:`gcra_reserve`,
:func:`gcra_pause`), so the client cannot tell them apart. A process alone keeps the plain in-memory
bucket: no syscall, no message per request.

Downloads of output files are not API calls and are not limited here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


class Bucket(Protocol):
    """What a request draws from: a reservation (seconds to wait) and a pause after the server's 429."""

    def reserve(self) -> float: ...

    def pause(self, seconds: float) -> None: ...


def gcra_params(per_minute: float, burst: int) -> tuple[float, float]:
    """GCRA's ``(interval, tolerance)`` for ``per_minute`` tokens a minute, at most ``burst`` at once;
    an interval of 0 turns the bucket off (``per_minute <= 0``)."""
    if burst < 1:
        raise ValueError(f"burst must be >= 1, not {burst}")
    interval = 60.0 / per_minute if per_minute > 0 else 0.0
    return interval, (burst - 1) * interval


def gcra_reserve(tat: float, now: float, *, interval: float, tolerance: float) -> tuple[float, float]:
    """One reservation of GCRA: ``(new tat, seconds to wait)`` from the theoretical arrival time ``tat``."""
    tat = max(tat, now)
    return tat + interval, max(tat - tolerance - now, 0.0)


def gcra_pause(tat: float, now: float, *, seconds: float, tolerance: float) -> float:
    """The ``tat`` that lets nothing go before ``seconds`` from ``now``, and no burst after that either
    (the server has just shown we were too fast)."""
    return max(tat, now + seconds + tolerance)


class TokenBucket:
    """A token bucket of ``per_minute`` tokens a minute that holds at most ``burst`` of them.

    Implemented as GCRA: ``_tat`` is the time at which the bucket would be full again; a request may go
    at ``_tat - tolerance``. ``per_minute <= 0`` turns the bucket off.
    """

    def __init__(self, per_minute: float, *, burst: int, clock: Clock = time.monotonic) -> None:
        self._interval, self._tolerance = gcra_params(per_minute, burst)
        self.per_minute = per_minute
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = float("-inf")

    def reserve(self) -> float:
        """Book the next slot; returns the seconds to wait before using it (0 when free now)."""
        if not self._interval:
            return 0.0
        with self._lock:
            self._tat, wait = gcra_reserve(
                self._tat, self._clock(), interval=self._interval, tolerance=self._tolerance
            )
        return wait

    def pause(self, seconds: float) -> None:
        """Let no new reservation go before ``seconds`` from now (the server said it is throttling)."""
        if not self._interval or seconds <= 0:
            return
        with self._lock:
            self._tat = gcra_pause(self._tat, self._clock(), seconds=seconds, tolerance=self._tolerance)


@dataclass(frozen=True)
class RateLimits:
    """The pair of buckets one API needs: creates, and every other call."""

    create: Bucket
    other: Bucket

    @classmethod
    def new(
        cls, *, create_per_minute: float, other_per_minute: float, burst: int, clock: Clock = time.monotonic
    ) -> RateLimits:
        """A fresh pair, shared with nobody (tests; a caller with its own sharing scheme)."""
        return cls(
            TokenBucket(create_per_minute, burst=burst, clock=clock),
            TokenBucket(other_per_minute, burst=burst, clock=clock),
        )

    def bucket(self, *, create: bool) -> Bucket:
        """The bucket a request draws from."""
        return self.create if create else self.other


_Key = tuple[str, float, float, int]
_registry: dict[_Key, RateLimits] = {}
_registry_lock = threading.Lock()


def shared_limits(
    base_url: str, *, create_per_minute: float, other_per_minute: float, burst: int
) -> RateLimits:
    """The process-wide buckets for ``base_url`` at these rates (created on first use)."""
    key = (base_url.rstrip("/"), float(create_per_minute), float(other_per_minute), burst)
    with _registry_lock:
        limits = _registry.get(key)
        if limits is None:
            limits = RateLimits.new(
                create_per_minute=create_per_minute, other_per_minute=other_per_minute, burst=burst
            )
            _registry[key] = limits
        return limits


def forget_shared_limits() -> None:
    """Drop every shared bucket, so that tests do not inherit each other's reservations."""
    with _registry_lock:
        _registry.clear()
