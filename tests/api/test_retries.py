"""The retry policy alone: verdicts, server hints, backoff and its caps."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

from kkiai_pipeline.api.retries import (
    RetryPolicy,
    Verdict,
    backoff_delay,
    exception_verdict,
    server_delay,
    status_verdict,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
REQUEST = httpx.Request("POST", "https://proxy.example/v1/predictions")


@pytest.mark.parametrize(
    ("status", "other", "create"),
    [
        (429, Verdict.RETRY, Verdict.RETRY),
        (500, Verdict.RETRY, Verdict.AMBIGUOUS),
        (502, Verdict.RETRY, Verdict.AMBIGUOUS),
        (503, Verdict.RETRY, Verdict.AMBIGUOUS),
        (504, Verdict.RETRY, Verdict.AMBIGUOUS),
        (400, Verdict.FAIL, Verdict.FAIL),
        (401, Verdict.FAIL, Verdict.FAIL),
        (402, Verdict.FAIL, Verdict.FAIL),
        (403, Verdict.FAIL, Verdict.FAIL),
        (404, Verdict.FAIL, Verdict.FAIL),
        (422, Verdict.FAIL, Verdict.FAIL),
    ],
)
def test_status_verdicts(status: int, other: Verdict, create: Verdict) -> None:
    assert status_verdict(status, create=False) is other
    assert status_verdict(status, create=True) is create


@pytest.mark.parametrize(
    ("exc", "other", "create"),
    [
        (httpx.ConnectError("refused"), Verdict.RETRY, Verdict.RETRY),
        (httpx.ConnectTimeout("slow"), Verdict.RETRY, Verdict.RETRY),
        (httpx.PoolTimeout("busy"), Verdict.RETRY, Verdict.RETRY),
        (httpx.ReadTimeout("slow"), Verdict.RETRY, Verdict.AMBIGUOUS),
        (httpx.WriteTimeout("slow"), Verdict.RETRY, Verdict.AMBIGUOUS),
        (httpx.ReadError("reset"), Verdict.RETRY, Verdict.AMBIGUOUS),
        (httpx.WriteError("reset"), Verdict.RETRY, Verdict.AMBIGUOUS),
        (httpx.RemoteProtocolError("disconnected"), Verdict.RETRY, Verdict.AMBIGUOUS),
        (httpx.UnsupportedProtocol("ftp"), Verdict.FAIL, Verdict.FAIL),
        (httpx.ProxyError("proxy"), Verdict.FAIL, Verdict.FAIL),
        (httpx.LocalProtocolError("ours"), Verdict.FAIL, Verdict.FAIL),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_exception_verdicts(exc: httpx.TransportError, other: Verdict, create: Verdict) -> None:
    assert exception_verdict(exc, create=False) is other
    assert exception_verdict(exc, create=True) is create


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + seconds_from_now, tz=timezone.utc), usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        # the 429 body's retry_after wins over every header
        (429, {"retry-after": "3", "ratelimit-reset": "9"}, {"retry_after": 10}, 10.0),
        (429, {}, {"detail": "throttled", "retry_after": "2.5"}, 2.5),
        (429, {"retry-after": "3", "ratelimit-reset": "9"}, {"detail": "no retry_after"}, 3.0),
        (429, {"retry-after": http_date(42)}, None, 42.0),
        (429, {"retry-after": http_date(-42)}, None, 0.0),  # a date already passed: go now
        (429, {"retry-after": "soon", "ratelimit-reset": "9"}, None, 9.0),
        (429, {"ratelimit-reset": "7"}, {"retry_after": True}, 7.0),
        (429, {}, None, None),
        (503, {"retry-after": "4"}, None, 4.0),
        (503, {"retry-after": http_date(30)}, None, 30.0),
        # outside a 429 neither the body's retry_after nor the window's reset means "try again then"
        (503, {"ratelimit-reset": "50"}, {"retry_after": 10}, None),
        (503, {"retry-after": "-5"}, None, 0.0),
        (503, {"retry-after": "nan"}, None, None),
    ],
)
def test_server_delay(status: int, headers: dict[str, str], body: object, expected: float | None) -> None:
    assert server_delay(status, httpx.Headers(headers), body, now=NOW) == expected


def test_http_date_without_a_zone_is_utc() -> None:
    when = datetime.fromtimestamp(NOW + 60, tz=timezone.utc).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert server_delay(503, httpx.Headers({"retry-after": when}), None, now=NOW) == 60.0


def test_backoff_ceiling_doubles_up_to_its_cap() -> None:
    almost_one = 1.0 - 1e-12
    ceilings = [backoff_delay(n, base=0.5, cap=5.0, random=lambda: almost_one) for n in range(1, 7)]
    assert ceilings == pytest.approx([0.5, 1.0, 2.0, 4.0, 5.0, 5.0])
    assert backoff_delay(3, base=0.5, cap=5.0, random=lambda: 0.0) == 0.0
    assert backoff_delay(10_000, base=0.5, cap=5.0, random=lambda: 0.5) == 2.5  # no overflow


def test_full_jitter_stays_within_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, base=0.5, cap=30.0, random=rng.random) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2  # spread out, not stuck at one value
        assert min(samples) < ceiling / 2


def test_policy_caps_every_single_wait() -> None:
    policy = RetryPolicy(backoff_base=10.0, backoff_max=1000.0, max_wait=12.0)
    assert policy.delay(1, hint=None, random=lambda: 0.5) == 5.0
    assert policy.delay(5, hint=None, random=lambda: 0.5) == 12.0  # backoff capped by max_wait
    assert policy.delay(1, hint=600.0, random=lambda: 0.5) == 12.0  # so is the server's hint
    assert policy.delay(1, hint=3.0, random=lambda: 0.5) == 3.0  # a hint is taken as is, no jitter
    assert policy.delay(2, hint=0.0, random=lambda: 0.5) == 10.0  # "now" still backs off a little
