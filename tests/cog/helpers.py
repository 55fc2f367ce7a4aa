"""Clients and transports for the Cog tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx

from kkiai_pipeline.api.cog import CogClient, CogOptions

from .conftest import CogServers

T = TypeVar("T")

TEST_TIMEOUT = 60.0  # every test's async part ends within this, or fails (no test should come close)
# Short patience everywhere, so that failure paths end in a fraction of a second.
FAST = CogOptions(
    ready_timeout=10,
    unreachable_timeout=0.3,
    health_interval=0.02,
    busy_interval=0.02,
    watch_interval=0.1,
    lost_after=0.5,
    cancel_timeout=10,
)
REMBG = "test/rembg:0a1b2c"
SLOW = "test/slow:3d4e5f"
FAILING = "test/failing:6a7b8c"
SLEEPY = "test/sleepy:9d0e1f"
BROKEN = "test/broken:2a3b4c"


def servers_of(cog: CogServers) -> dict[str, str]:
    return {
        "test/rembg": cog.rembg.url,
        "test/slow": cog.slow.url,
        "test/failing": cog.failing.url,
        "test/sleepy": cog.sleepy.url,
        "test/broken": cog.broken.url,
    }


def make_client(cog: CogServers, *, options: CogOptions = FAST, **kwargs: Any) -> CogClient:
    return CogClient(servers=servers_of(cog), options=options, **kwargs)


def run(client: CogClient, go: Callable[[CogClient], Awaitable[T]]) -> T:
    """Run ``go(client)`` on a fresh loop, closing the client after; bounded by TEST_TIMEOUT."""

    async def main() -> T:
        async with client:
            return await asyncio.wait_for(go(client), TEST_TIMEOUT)

    return asyncio.run(main())


class LosePutAnswers(httpx.AsyncBaseTransport):
    """A real transport, except that the first PUT's answer is lost: a ReadTimeout is raised.

    With ``forward`` the PUT reaches the server first (the answer is lost on the way back); without,
    it never does (lost on the way there, after the connection was made).
    """

    def __init__(self, *, forward: bool) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.forward = forward
        self.puts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts.append(request.url.path)
            if len(self.puts) == 1:
                if self.forward:
                    response = await self.inner.handle_async_request(request)
                    await response.aread()
                    await response.aclose()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Recording(httpx.AsyncBaseTransport):
    """A real transport that records every request and the JSON it was answered with."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[tuple[str, str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        self.exchanges.append((request.method, request.url.path, json.loads(body) if body else None))
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextlib.contextmanager
def socket_without_listener() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections to it are refused, reliably."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
