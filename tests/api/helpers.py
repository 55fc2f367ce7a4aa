"""A fake clock and a client wired to an httpx.MockTransport, for tests that must never really sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from kkiai_pipeline.api.client import ClientOptions, PredictionsClient

BASE = "https://proxy.example/replicate/v1"
VERSION = "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
# No polling pauses and no client-side rate limit: the only sleeps left are the retries' own.
FAST = ClientOptions(
    poll_interval=0, max_poll_interval=0, wait_seconds=5, create_rate_per_minute=0, other_rate_per_minute=0
)
JITTER = 0.5  # what the fake jitter draws: a backoff ceiling of c gives a pause of c / 2

T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]


class FakeTime:
    """A monotonic clock that moves only when the code under test sleeps; records every sleep."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def prediction(status: str, output: object = None, **extra: object) -> dict[str, object]:
    return {
        "id": "p1",
        "model": "stability-ai/sdxl",
        "version": VERSION.split(":")[1],
        "status": status,
        "output": output,
        "error": None,
        "logs": "",
        # a pass-through proxy hands out upstream URLs; the client must not follow them
        "urls": {"get": "https://api.replicate.com/v1/predictions/p1"},
        **extra,
    }


def make_client(
    handler: Handler, *, time: FakeTime | None = None, options: ClientOptions = FAST, **kwargs: Any
) -> PredictionsClient:
    time = time or FakeTime()
    fakes: dict[str, Any] = {"sleep": time.sleep, "clock": time.clock, "jitter": lambda: JITTER}
    return PredictionsClient(
        base_url=BASE,
        token="secret-token",
        options=options,
        transport=httpx.MockTransport(handler),
        **{**fakes, **kwargs},
    )


def run(client: PredictionsClient, go: Callable[[PredictionsClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with client:
            return await go(client)

    return asyncio.run(main())


def call(handler: Handler, go: Callable[[PredictionsClient], Awaitable[T]], **kwargs: Any) -> T:
    """Run ``go`` against a fresh fast client that answers with ``handler``."""
    return run(make_client(handler, **kwargs), go)
