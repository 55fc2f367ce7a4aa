"""The HTTP client under our httpx code: aiohttp's connection pool, through the ``httpx-aiohttp`` package.

httpx stays the API the rest of the code uses (requests, responses, timeouts, exceptions, streaming);
only the transport under it changes. httpcore's own pool walks every connection on each request start
and response close (``AsyncConnectionPool._assign_requests_to_connections``), O(connections²) per
request: at a concurrency of 100 it was most of the client's CPU (``docs/benchmarks.md``;
``python -m benchmarks.limits`` measures it beside this one, and beside httpx with 8 smaller pools).

httpx-aiohttp 0.2 alone would not do: it maps every ``aiohttp.ClientConnectionError`` to
``httpx.ConnectTimeout``, so a connection the server dropped *after* receiving a create reads as one
that never left, and the create is retried and paid twice (measured against the fake API: one dropped
answer, two predictions). It also raises its httpx errors without their request, and lets other aiohttp
errors (a malformed answer) through unmapped. :class:`AiohttpTransport` maps them itself, from the
aiohttp exception, before our retry rules see them:

- the connection could not be made (``ClientConnectorError``, ``ConnectionTimeoutError``): nothing was
  sent, ``httpx.ConnectError`` / ``httpx.ConnectTimeout``;
- a read timed out: ``httpx.ReadTimeout``;
- anything else, while sending or after (a dropped connection, a reset, a malformed or cut answer):
  ``httpx.RemoteProtocolError``, which the retry rules read as "the server may have acted on it".

Its connector keeps httpx's meaning of ``httpx.Limits(max_connections=None)``, no limit (aiohttp's
default would cap a process at 100 connections, creates held by ``Prefer: wait`` included).
:class:`HttpClient` is an ``httpx.AsyncClient`` whose own transport is this one; a transport passed in
(the tests') is used as it is, and proxies from the environment keep httpx's transports.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp


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


class AiohttpTransport(httpx_aiohttp.AiohttpTransport):
    """httpx-aiohttp's transport with httpx's own distinction between "not sent" and "maybe sent"."""

    def __init__(self, *, limits: httpx.Limits, **kwargs: Any) -> None:
        super().__init__(limits=limits, **kwargs)
        self.client = self._session

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,  # 0: no limit
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise _translate(exc.__cause__ or exc, request) from (exc.__cause__ or exc)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc, request) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream, request)
        return response


class _Body(httpx.AsyncByteStream):
    """A response body whose read failures are translated too."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream, self._request = stream, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as exc:
            raise _translate(exc.__cause__ or exc, self._request) from (exc.__cause__ or exc)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc, self._request) from exc

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except (httpx.TransportError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _translate(exc.__cause__ or exc, self._request) from exc


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
