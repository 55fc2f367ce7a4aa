"""When to retry a failed request, and how long to wait first: pure functions, no I/O.

A failure is either an error status or an httpx transport exception. Each gets a :class:`Verdict`:

- ``RETRY``: try again after a pause. 429 and 5xx answers; connections that failed before the request
  was sent (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``); and, for requests that are safe to
  repeat (polls, cancels, downloads), failures after sending (read/write timeouts and errors, a dropped
  connection).
- ``AMBIGUOUS``: a *create* that failed after it may have reached the server (a read timeout, a dropped
  connection after sending, or a 5xx). A prediction may exist and be billed, so repeating the request
  could pay twice; the client raises ``AmbiguousCreateError`` unless the user opted in to retries.
- ``FAIL``: do not retry (400, 401, 402, 403, 404, 422, ...; an unsupported URL scheme).

The pause honours, in this order, the 429 JSON body's ``retry_after`` (seconds), a ``Retry-After``
header (seconds or an RFC 7231 HTTP date), and, on a 429, ``ratelimit-reset`` (seconds). Without a hint
it is exponential backoff with full jitter: uniform in ``[0, min(backoff_max, backoff_base * 2**(n-1))]``
before retry ``n``. No single pause exceeds ``max_wait``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class Verdict(enum.Enum):
    """What to do about one failed attempt."""

    RETRY = "retry"
    AMBIGUOUS = "ambiguous"
    FAIL = "fail"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_attempts`` counts every attempt, the first one included (1 turns retries off).
    """

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_wait: float = 60.0

    def delay(self, attempt: int, *, hint: float | None, random: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next one."""
        if hint is not None and hint > 0:
            return min(hint, self.max_wait)
        backoff = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_max, random=random)
        return min(backoff, self.max_wait)


def backoff_delay(attempt: int, *, base: float, cap: float, random: Callable[[], float]) -> float:
    """Exponential backoff with full jitter (``random`` returns a float in ``[0, 1)``)."""
    # A large exponent would raise OverflowError; clamped, it still leaves the cap far behind.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return random() * ceiling


# Failed before any byte of the request left: nothing can have been created.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Failed while sending or after: the server may have received, and acted on, the request.
_MAYBE_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
    httpx.RemoteProtocolError,
)


def status_verdict(status: int, *, create: bool) -> Verdict:
    """The verdict on an error answer; ``create`` marks a request that may bill when repeated."""
    if status == 429:
        return Verdict.RETRY  # throttled: the server refused it, so nothing was created
    if status >= 500:
        return Verdict.AMBIGUOUS if create else Verdict.RETRY
    return Verdict.FAIL


def exception_verdict(exc: httpx.TransportError, *, create: bool) -> Verdict:
    """The verdict on a transport failure (``ProxyError``, ``UnsupportedProtocol`` ... are final)."""
    if isinstance(exc, _NOT_SENT):
        return Verdict.RETRY
    if isinstance(exc, _MAYBE_SENT):
        return Verdict.AMBIGUOUS if create else Verdict.RETRY
    return Verdict.FAIL


def server_delay(status: int, headers: Mapping[str, str], body: Any, *, now: float) -> float | None:
    """The pause the server asked for, in seconds, or None; ``now`` is the epoch time (for dates)."""
    if status == 429 and isinstance(body, Mapping):
        seconds = _seconds(body.get("retry_after"))
        if seconds is not None:
            return seconds
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        seconds = _seconds(retry_after)
        if seconds is None:
            seconds = _seconds_until(retry_after, now=now)
        if seconds is not None:
            return seconds
    if status == 429:
        # On other answers the window's reset says nothing about when the failure will pass.
        return _seconds(headers.get("ratelimit-reset"))
    return None


def _seconds(value: object) -> float | None:
    """A non-negative number of seconds from a JSON number or a numeric string, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _seconds_until(http_date: str, *, now: float) -> float | None:
    """Seconds from ``now`` until an RFC 7231 HTTP date (0 if it has passed), or None if unparsable."""
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no claim about the local zone
        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - now, 0.0)
