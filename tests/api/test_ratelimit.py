"""Token buckets: reservations on a fake clock, process-wide sharing, and threads with their own loops."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions, PredictionsClient
from kkiai_pipeline.api.ratelimit import RateLimits, TokenBucket, shared_limits

from .helpers import BASE, FAST, VERSION, FakeTime, make_client, prediction, run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_one_slot_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(60, burst=3, clock=clock)  # one a second
    assert [bucket.reserve() for _ in range(6)] == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]


def test_the_burst_refills_while_idle() -> None:
    clock = Clock()
    bucket = TokenBucket(120, burst=2, clock=clock)  # one every 0.5 s
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.5]
    clock.now = 10.0
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.5]


def test_requests_at_the_rate_never_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(60, burst=1, clock=clock)
    waits = []
    for i in range(50):
        clock.now = float(i)
        waits.append(bucket.reserve())
    assert waits == [0.0] * 50


def test_zero_rate_turns_the_bucket_off() -> None:
    bucket = TokenBucket(0, burst=1, clock=Clock())
    bucket.pause(30)
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100


def test_pause_holds_everyone_and_cancels_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(60, burst=5, clock=clock)
    bucket.pause(10)
    assert [bucket.reserve() for _ in range(3)] == [10.0, 11.0, 12.0]


def test_burst_must_be_positive() -> None:
    with pytest.raises(ValueError, match="burst must be >= 1, not 0"):
        TokenBucket(60, burst=0)


def test_one_pair_of_buckets_per_api_and_rates() -> None:
    a = shared_limits(BASE, create_per_minute=600, other_per_minute=3000, burst=10)
    assert shared_limits(BASE + "/", create_per_minute=600.0, other_per_minute=3000, burst=10) is a
    assert (
        shared_limits("https://other.example/v1", create_per_minute=600, other_per_minute=3000, burst=10)
        is not a
    )
    assert shared_limits(BASE, create_per_minute=300, other_per_minute=3000, burst=10) is not a
    assert a.bucket(create=True) is a.create
    assert a.bucket(create=False) is a.other


def test_clients_on_the_same_api_share_the_create_bucket() -> None:
    options = ClientOptions(wait_seconds=0, create_rate_per_minute=1, burst=1)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json=prediction("starting"))

    first, second = (make_client(handler, options=options) for _ in range(2))
    assert first.rate_limits is second.rate_limits
    run(first, lambda c: c.create(VERSION, {}))
    run(second, lambda c: c.create(VERSION, {}))
    assert first.stats.rate_limit_waits == 0
    assert second.stats.rate_limit_waits == 1  # the first one used the only slot of this minute
    assert second.stats.rate_limit_wait_seconds > 0
    assert second.stats.requests == 1


def test_downloads_and_creates_do_not_use_the_other_bucket() -> None:
    clock = Clock()
    limits = RateLimits.new(create_per_minute=60, other_per_minute=60, burst=1, clock=clock)
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201 if request.method == "POST" else 200, json=prediction("starting"))

    client = make_client(handler, options=ClientOptions(wait_seconds=0), rate_limits=limits, time=time)

    async def go(c: PredictionsClient) -> None:
        await c.create(VERSION, {})
        await c.get("p1")
        await c.create(VERSION, {})

    run(client, go)
    assert time.sleeps == [1.0]  # only the second create waited; the poll had its own bucket
    assert client.stats.rate_limit_waits == 1


def test_two_event_loops_in_two_threads_share_one_bucket() -> None:
    limits = RateLimits.new(create_per_minute=600, other_per_minute=60, burst=1, clock=lambda: 0.0)
    times = [FakeTime(), FakeTime()]
    clients: list[PredictionsClient] = []
    registry_answers = []
    start = threading.Barrier(2)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=prediction("processing"))

    def worker(time: FakeTime) -> None:
        client = make_client(handler, options=FAST, rate_limits=limits, time=time)
        clients.append(client)
        start.wait()
        registry_answers.append(shared_limits(BASE, create_per_minute=1, other_per_minute=2, burst=3))

        async def go(c: PredictionsClient) -> None:
            for _ in range(50):
                await c.get("p1")

        run(client, go)

    threads = [threading.Thread(target=worker, args=(t,)) for t in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert registry_answers[0] is registry_answers[1]
    waits = sorted(times[0].sleeps + times[1].sleeps)
    assert waits == [float(k) for k in range(1, 100)]  # 100 reservations, each slot handed out once
    assert sum(c.stats.rate_limit_waits for c in clients) == 99
    assert sum(c.stats.requests for c in clients) == 100


def test_the_limiter_is_not_bound_to_an_event_loop() -> None:
    limits = RateLimits.new(create_per_minute=60, other_per_minute=60, burst=1, clock=lambda: 0.0)

    async def reserve() -> float:
        return limits.other.reserve()

    assert asyncio.run(reserve()) == 0.0
    assert asyncio.run(reserve()) == 1.0
