"""One httpx client over several connection pools, so that a hundred requests in flight stay cheap.

httpcore's pool walks every one of its connections on each request start and each response close
(``AsyncConnectionPool._assign_requests_to_connections``), and counts them again for each idle one: a
pool of C connections costs O(C²) per request, so one client at a concurrency of 100 spends more CPU
in its pool than in everything else (``docs/benchmarks.md``). :class:`ShardedClient` is an
``httpx.AsyncClient`` whose default transport is :class:`ShardedTransport`: ``POOLS`` ordinary
``httpx.AsyncHTTPTransport`` s taken in turn, each with its own small pool, sharing one SSL context.

Everything else is httpx's own: the exceptions (so the retry rules that keep creates from being paid
twice read them as before), timeouts, streaming, and the proxies taken from the environment (they
keep their own transports, as in a plain ``httpx.AsyncClient``). A transport passed in (the tests')
is used as it is.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

POOLS = 8  # connection pools per client: at a concurrency of 100, ~12 connections each
_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own


class ShardedTransport(httpx.AsyncBaseTransport):
    """Hands each request to the next of ``pools`` httpx transports in turn."""

    def __init__(
        self,
        pools: int = POOLS,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits | None = None,
    ) -> None:
        if pools < 1:
            raise ValueError(f"pools must be at least 1, not {pools}")
        limits = limits or httpx.Limits()
        # One SSL context (loading the CA bundle once), shared by every pool.
        context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        each = httpx.Limits(
            max_connections=_share(limits.max_connections, pools),
            max_keepalive_connections=_share(limits.max_keepalive_connections, pools),
            keepalive_expiry=limits.keepalive_expiry,
        )
        self.pools = [
            httpx.AsyncHTTPTransport(verify=context, http1=http1, http2=http2, limits=each)
            for _ in range(pools)
        ]
        self._turn = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self.pools[self._turn]
        self._turn = (self._turn + 1) % len(self.pools)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


class ShardedClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose own transport is a :class:`ShardedTransport`."""

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return ShardedTransport(
            verify=verify, cert=cert, trust_env=trust_env, http1=http1, http2=http2, limits=limits
        )


def _share(total: int | None, pools: int) -> int | None:
    return None if total is None else max(-(-total // pools), 1)
