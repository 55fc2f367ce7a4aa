"""Dropping a connection on purpose, as a flaky network or a crashing edge would.

ASGI has no way for an app to abort its connection: uvicorn answers 500 to an app that returns
without responding, and logs a traceback for one that raises. So the server built by
``server.build_server`` uses a protocol class (``tracking_protocol``) that records every open transport
in a ``Connections`` registry, keyed by the peer address the request's ASGI scope carries
(``scope["client"]``). A handler that means to drop answers with a ``Drop`` response, which sends what
it was told to (nothing, or the headers and part of the body), closes the transport and waits for
uvicorn to notice. Nothing is logged, and the client sees (httpx 0.28, h11)::

    nothing sent         httpx.RemoteProtocolError: Server disconnected without sending a response.
    headers, half body   httpx.RemoteProtocolError: peer closed connection without sending complete
                         message body (received N bytes, expected M)

Both are ``httpx.TransportError``; with ``client.stream(...)`` the second raises while reading the
body, after the status code was seen. The request body is read before dropping, so the close is an
orderly FIN and not a reset (which would be ``httpx.ReadError``).

Served any other way (``create_app`` under another server, httpx's ASGITransport), the registry is
empty and ``Drop`` raises ``ConnectionDropped`` from inside the app instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.utils import get_remote_addr

Peer = tuple[str, int]

#: How long a drop waits for uvicorn to see the connection go.
CLOSE_TIMEOUT = 5.0


class ConnectionDropped(RuntimeError):
    """Raised by a ``Drop`` that cannot reach its connection (the app is not served by build_server)."""


class Connections:
    """The open transports of one server, by peer address; used on the server's event loop only."""

    def __init__(self) -> None:
        self._open: dict[Peer, tuple[asyncio.Transport, asyncio.Event]] = {}
        self.tracking = False  # becomes true with the first connection: served by build_server

    def opened(self, transport: asyncio.BaseTransport) -> Peer | None:
        """Records a new connection; returns its peer address (None if it has none)."""
        self.tracking = True
        transport = cast(asyncio.Transport, transport)
        peer = get_remote_addr(transport)
        if peer is not None:
            self._open[peer] = (transport, asyncio.Event())
        return peer

    def closed(self, peer: Peer | None) -> None:
        """Forgets a connection that went, waking any drop waiting for it."""
        entry = self._open.pop(peer, None) if peer is not None else None
        if entry is not None:
            entry[1].set()

    async def drop(self, peer: Any) -> bool:
        """Closes the connection to ``peer`` and waits until it is gone; False if it is not known."""
        key = _peer(peer)
        entry = self._open.get(key) if key is not None else None
        if entry is None:
            return False
        transport, gone = entry
        transport.close()
        try:
            await asyncio.wait_for(gone.wait(), timeout=CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            transport.abort()
        return True


def _peer(client: Any) -> Peer | None:
    if isinstance(client, (tuple, list)) and len(client) == 2:
        return str(client[0]), int(client[1])
    return None


def tracking_protocol(base: type[asyncio.Protocol], connections: Connections) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` that keeps ``connections`` up to date."""

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        self.kkiai_peer = connections.opened(transport)
        base.connection_made(self, transport)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        try:
            base.connection_lost(self, exc)
        finally:
            connections.closed(self.kkiai_peer)

    methods = {"connection_made": connection_made, "connection_lost": connection_lost}
    return type(f"Tracking{base.__name__}", (base,), methods)


class Drop(Response):
    """A response that drops the connection: at once, or after the headers and half of ``partial``'s body."""

    def __init__(self, connections: Connections, *, partial: Response | None = None) -> None:
        super().__init__(status_code=partial.status_code if partial is not None else 500)
        self.connections = connections
        self.partial = partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.partial is not None:
            body = bytes(self.partial.body)
            await send(
                {
                    "type": "http.response.start",
                    "status": self.partial.status_code,
                    "headers": self.partial.raw_headers,
                }
            )
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        dropped = await self.connections.drop(scope.get("client"))
        if not dropped and not self.connections.tracking:
            raise ConnectionDropped("the sandbox dropped this connection on purpose")
        # Tracked but not found: the client has already gone, which is all a drop wants.
