"""The client's connection pools: requests go round the pools, httpx's own errors come through."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kkiai_pipeline.api.transport import ShardedClient, ShardedTransport


def test_requests_go_round_the_pools_in_turn() -> None:
    seen: list[int] = []

    def pool(number: int) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: seen.append(number) or httpx.Response(200))

    transport = ShardedTransport(3, limits=httpx.Limits(max_connections=10, max_keepalive_connections=5))
    transport.pools = [pool(n) for n in range(3)]  # type: ignore[misc]

    async def go() -> None:
        async with ShardedClient(transport=transport) as client:
            await asyncio.gather(*(client.get("http://127.0.0.1:9/x") for _ in range(7)))

    asyncio.run(go())
    assert sorted(seen) == [0, 0, 0, 1, 1, 2, 2]


def test_limits_are_shared_out_between_the_pools() -> None:
    transport = ShardedTransport(4, limits=httpx.Limits(max_connections=10, max_keepalive_connections=5))
    pools = [p._pool for p in transport.pools]
    assert [(p._max_connections, p._max_keepalive_connections) for p in pools] == [(3, 2)] * 4
    assert len({id(p._ssl_context) for p in pools}) == 1  # the CA bundle is loaded once


def test_the_default_transport_is_sharded_and_a_given_one_is_kept() -> None:
    async def go() -> None:
        async with ShardedClient() as client:
            assert isinstance(client._transport, ShardedTransport)
        mock = httpx.MockTransport(lambda request: httpx.Response(204))
        async with ShardedClient(transport=mock) as client:
            assert client._transport is mock

    asyncio.run(go())


def test_a_refused_connection_is_httpx_connect_error() -> None:
    """The retry rules tell a create never sent (safe to retry) by httpx's own exception types."""

    async def go() -> None:
        async with ShardedClient() as client:
            await client.get("http://127.0.0.1:9/")  # the discard port: nothing listens

    with pytest.raises(httpx.ConnectError):
        asyncio.run(go())
