"""Polls and cancels under faults: what is retried, how long the client waits, when it gives up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions, PredictionsClient
from kkiai_pipeline.api.ratelimit import RateLimits
from kkiai_pipeline.errors import ApiError, TransportError

from .helpers import FAST, FakeTime, call, make_client, prediction, run

Handler = Callable[[httpx.Request], httpx.Response]


def failing(*failures: httpx.Response | type[httpx.TransportError]) -> tuple[Handler, list[httpx.Request]]:
    """A server that answers with ``failures`` in turn, then with a processing prediction."""
    seen: list[httpx.Request] = []
    queue = list(failures)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not queue:
            return httpx.Response(200, json=prediction("processing"))
        failure = queue.pop(0)
        if isinstance(failure, httpx.Response):
            return failure
        raise failure("injected fault", request=request)

    return handler, seen


def test_429_waits_for_the_bodys_retry_after() -> None:
    time = FakeTime()
    throttled = httpx.Response(
        429,
        json={
            "detail": "Request was throttled. Your rate limit resets in ~7s.",
            "status": 429,
            "retry_after": 7,
        },
        headers={"ratelimit-reset": "30"},
    )
    handler, seen = failing(throttled)
    client = make_client(handler, time=time)
    assert run(client, lambda c: c.get("p1")).status == "processing"
    assert time.sleeps == [7.0]
    assert len(seen) == 2
    assert client.stats.retries == {"429": 1}
    assert client.stats.retry_wait_seconds == 7.0
    assert client.stats.requests == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_polls_back_off_with_jitter(status: int) -> None:
    time = FakeTime()
    handler, _ = failing(httpx.Response(status), httpx.Response(status, text="<html>oops</html>"))
    client = make_client(handler, time=time)
    run(client, lambda c: c.get("p1"))
    assert time.sleeps == [0.25, 0.5]  # jitter 0.5 of ceilings 0.5 s and 1 s
    assert client.stats.retries == {str(status): 2}


@pytest.mark.parametrize(
    "fault", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
def test_network_faults_on_polls_are_retried(fault: type[httpx.TransportError]) -> None:
    time = FakeTime()
    handler, seen = failing(fault)
    client = make_client(handler, time=time)
    assert run(client, lambda c: c.get("p1")).status == "processing"
    assert len(seen) == 2
    assert time.sleeps == [0.25]
    assert client.stats.retries == {fault.__name__: 1}


def test_cancel_is_retried_like_a_poll() -> None:
    handler, seen = failing(httpx.ReadTimeout, httpx.Response(503))
    client = make_client(handler)
    run(client, lambda c: c.cancel("p1"))
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/replicate/v1/predictions/p1/cancel")] * 3
    assert client.stats.creates == 0


def test_gives_up_after_max_attempts_on_an_error_answer() -> None:
    options = ClientOptions(max_attempts=3, create_rate_per_minute=0, other_rate_per_minute=0)
    time = FakeTime()
    client = make_client(lambda r: httpx.Response(503, json={"detail": "down"}), options=options, time=time)
    with pytest.raises(ApiError) as caught:
        run(client, lambda c: c.get("p1"))
    assert str(caught.value) == (
        "the API answered 503 to GET /replicate/v1/predictions/p1: down (gave up after 3 attempts)"
    )
    assert caught.value.status_code == 503
    assert client.stats.requests == 3
    assert len(time.sleeps) == 2


def test_gives_up_after_max_attempts_on_timeouts() -> None:
    options = ClientOptions(max_attempts=2, create_rate_per_minute=0, other_rate_per_minute=0)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(TransportError) as caught:
        call(handler, lambda c: c.get("p1"), options=options)
    assert str(caught.value) == (
        "GET https://proxy.example/replicate/v1/predictions/p1 timed out: ReadTimeout (gave up after 2 attempts)"
    )
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


def test_a_broken_connection_names_the_request() -> None:
    options = ClientOptions(max_attempts=1)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    with pytest.raises(TransportError) as caught:
        call(handler, lambda c: c.get("p1"), options=options)
    assert str(caught.value) == (
        "GET https://proxy.example/replicate/v1/predictions/p1 failed: the connection broke "
        "(RemoteProtocolError: Server disconnected without sending a response.)"
    )


def test_max_attempts_of_one_turns_retries_off() -> None:
    handler, seen = failing(httpx.Response(503))
    with pytest.raises(
        ApiError, match=r"^the API answered 503 to GET /replicate/v1/predictions/p1: Service Unavailable$"
    ):
        call(handler, lambda c: c.get("p1"), options=ClientOptions(max_attempts=1))
    assert len(seen) == 1


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    handler, seen = failing(httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(ApiError) as caught:
        call(handler, lambda c: c.get("p1"))
    assert caught.value.status_code == status
    assert len(seen) == 1


def test_retry_after_header_in_seconds() -> None:
    time = FakeTime()
    handler, _ = failing(httpx.Response(503, headers={"Retry-After": "3"}))
    call(handler, lambda c: c.get("p1"), time=time)
    assert time.sleeps == [3.0]


def test_retry_after_http_date_is_capped_at_max_wait() -> None:
    time = FakeTime()
    later = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    handler, _ = failing(httpx.Response(429, headers={"Retry-After": later}))
    call(handler, lambda c: c.get("p1"), time=time)
    assert time.sleeps == [60.0]


def test_retry_after_http_date_in_the_past_backs_off_instead() -> None:
    time = FakeTime()
    handler, _ = failing(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    call(handler, lambda c: c.get("p1"), time=time)
    assert time.sleeps == [0.25]


def test_ratelimit_reset_on_a_bare_429() -> None:
    time = FakeTime()
    handler, _ = failing(httpx.Response(429, text="slow down", headers={"ratelimit-reset": "4"}))
    call(handler, lambda c: c.get("p1"), time=time)
    assert time.sleeps == [4.0]


def test_a_long_retry_after_is_capped() -> None:
    time = FakeTime()
    options = ClientOptions(max_wait=5.0, create_rate_per_minute=0, other_rate_per_minute=0)
    handler, _ = failing(httpx.Response(429, json={"retry_after": 600}))
    call(handler, lambda c: c.get("p1"), time=time, options=options)
    assert time.sleeps == [5.0]


def test_a_429_holds_everyone_sharing_the_bucket() -> None:
    time = FakeTime()
    limits = RateLimits.new(create_per_minute=600, other_per_minute=6000, burst=10, clock=time.clock)
    others: list[float] = []

    async def sleep(seconds: float) -> None:
        if not others:
            others.append(limits.other.reserve())  # another client's poll, right then
        await time.sleep(seconds)

    handler, _ = failing(httpx.Response(429, json={"retry_after": 5}))
    client = make_client(handler, options=ClientOptions(), rate_limits=limits, time=time, sleep=sleep)
    run(client, lambda c: c.get("p1"))
    assert others == [5.0]


def test_stats_count_requests_and_retries_by_reason() -> None:
    handler, _ = failing(
        httpx.Response(429, json={"retry_after": 1}), httpx.ConnectError, httpx.Response(502)
    )
    client = make_client(handler, options=FAST)

    async def go(c: PredictionsClient) -> None:
        await c.get("p1")
        await c.get("p1")

    run(client, go)
    assert client.stats.requests == 5
    assert client.stats.retries == {"429": 1, "ConnectError": 1, "502": 1}
    assert client.stats.total_retries == 3
    assert client.stats.creates == 0
