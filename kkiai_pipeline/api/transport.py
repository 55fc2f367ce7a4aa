"""The HTTP client under our httpx code: httpx's API over aiohttp's connection pool.

httpx stays the API the rest of the code uses (requests, responses, timeouts, exceptions, streaming);
only the transport under it changes. httpcore's own pool walks every connection on each request start
and response close (``AsyncConnectionPool._assign_requests_to_connections``), O(connections²) per
request: at a concurrency of 100 it was most of the client's CPU (``docs/benchmarks.md``;
``python -m benchmarks.limits`` measures this transport beside httpx's one pool and beside 8 of them).

This is what the ``httpx-aiohttp`` package does, written out because its 0.2 transport would cost
money: it maps every ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``, so a connection the
server dropped *after* receiving a create reads as one that never left, and the create is retried and
paid twice (measured against the fake API: one dropped answer, two predictions). It also raises its
httpx errors without their request, lets other aiohttp errors through unmapped, and fails on a reason
phrase that is not UTF-8 (tests/hostile_server). :class:`AiohttpTransport` maps aiohttp's failures
itself, before our retry rules see them:

- the connection could not be made (``ClientConnectorError``, ``ConnectionTimeoutError``): nothing was
  sent, ``httpx.ConnectError`` / ``httpx.ConnectTimeout``;
- a read timed out: ``httpx.ReadTimeout``;
- anything else, while sending or after (a dropped connection, a reset, a malformed or cut answer):
  ``httpx.RemoteProtocolError``, which the retry rules read as "the server may have acted on it".

Its connector keeps httpx's meaning of ``httpx.Limits(max_connections=None)``, no limit (aiohttp's
default would cap a process at 100 connections, creates held by ``Prefer: wait`` included). A body
not read to its end closes its connection. :class:`HttpClient` is an ``httpx.AsyncClient`` whose own
transport is this one; a transport passed in (the tests') is used as it is, and proxies from the
environment keep httpx's own transports.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx


class HttpClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose own transport is :class:`AiohttpTransport`."""

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return AiohttpTransport(limits=limits, verify=verify, cert=cert, trust_env=trust_env)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with aiohttp; failures keep httpx's "not sent" / "maybe sent" meaning."""

    CHUNK = 64 * 1024

    def __init__(
        self,
        *,
        limits: httpx.Limits,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
    ) -> None:
        self.limits = limits
        self.ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        self._client: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        """A session on the running loop (made at the first request)."""
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,  # 0: no limit
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._client is None:
            self._client = self._session()
        timeout = request.extensions.get("timeout", {})
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body (not sent by this project, but allowed)
            data = request.stream  # type: ignore[assignment]
            request.headers.pop("transfer-encoding", None)  # aiohttp chunks it itself
        try:
            response = await self._client.request(
                request.method,
                str(request.url),
                headers=request.headers,
                data=data,
                allow_redirects=False,  # redirects are httpx's to follow (or, here, refuse)
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            ).__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc, request) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            # aiohttp decodes the reason phrase with surrogate escapes: give httpx its bytes back.
            extensions["reason_phrase"] = response.reason.encode("utf-8", "surrogateescape")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class _Body(httpx.AsyncByteStream):
    """A response body read from aiohttp, its failures translated too."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response, self._request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(AiohttpTransport.CHUNK):
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()  # back to the pool if read to its end, else the connection is closed


def _translate(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS handshake
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    return httpx.RemoteProtocolError(message, request=request)  # maybe sent: never retried for a create
