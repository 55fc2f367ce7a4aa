"""Serving the sandbox with uvicorn: in a background thread (tests, benchmarks) or in the foreground (CLI).

The listening socket is bound before uvicorn starts, so port 0 resolves to a known free port at once.
uvicorn's HTTP protocol is subclassed to track open connections (``drops.tracking_protocol``), so that
injected faults can drop them; proxy headers are ignored so that ``scope["client"]`` is the real peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ..sockets import bind
from .app import SandboxApi, create_app
from .config import SandboxConfig, with_default_store
from .drops import tracking_protocol

API_PATH = "/replicate/v1"

T = TypeVar("T")


def root_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """A uvicorn server that answers pending ``Prefer: wait`` requests as soon as it starts stopping.

    Otherwise the graceful shutdown would wait for them (up to 60 s) and then cancel them.
    """

    def __init__(self, config: uvicorn.Config, *, api: SandboxApi) -> None:
        super().__init__(config)
        self._api = api

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._api.store.release_waiters()
        await super().shutdown(sockets=sockets)


def build_server(app: Starlette) -> uvicorn.Server:
    """A quiet uvicorn server for ``app`` (made by ``create_app``) that leaves logging alone."""
    api: SandboxApi = app.state.sandbox
    config = uvicorn.Config(
        app,
        http=tracking_protocol(AutoHTTPProtocol, api.connections),
        proxy_headers=False,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return _Server(config, api=api)


class Sandbox:
    """A sandbox running in a background thread (what ``serve_in_thread`` yields)."""

    def __init__(self, *, root_url: str, api: SandboxApi) -> None:
        self.root_url = root_url
        self.store = api.config.store
        self._api = api
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        """The API's base URL, ``http://127.0.0.1:<port>/replicate/v1``."""
        return self.root_url + API_PATH

    @property
    def port(self) -> int:
        """The TCP port the sandbox listens on."""
        return int(self.root_url.rsplit(":", 1)[1])

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /sandbox/stats`` returns them (still readable once stopped)."""
        return self._on_loop(self._api.stats)

    def reset(self) -> None:
        """Zeroes the counters, as ``POST /sandbox/reset`` does."""
        self._on_loop(self._api.reset)

    def _on_loop(self, function: Callable[[], T]) -> T:
        """Calls ``function`` on the server's event loop, where the store lives, and returns its result.

        Once the server has stopped nothing else touches the store, so ``function`` is called directly.
        """

        async def call() -> T:
            return function()

        if self._loop is None:
            return function()
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)


@contextlib.contextmanager
def serve_in_thread(
    config: SandboxConfig | None = None, *, startup_timeout: float = 10.0
) -> Iterator[Sandbox]:
    """Runs the sandbox in a daemon thread with its own event loop until the ``with`` block ends.

    Returns once the server accepts connections; stops it gracefully (and waits) on exit. Without a
    ``store`` in ``config`` it uses the default one, found from the environment (``default_store``).
    """
    config = with_default_store(config or SandboxConfig(), os.environ)
    app = create_app(config)
    try:
        sock = bind(config.host, config.port)
    except OSError:
        app.state.sandbox.close()
        raise
    server = build_server(app)
    sandbox = Sandbox(root_url=root_url(sock), api=app.state.sandbox)

    async def serve() -> None:
        sandbox._loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="kkiai-sandbox", daemon=True)
    try:
        thread.start()
        _wait_started(server, thread, timeout=startup_timeout)
        yield sandbox
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout + 10)
        sandbox._loop = None
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the sandbox server stopped during startup")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox server did not start within {timeout} s")
        time.sleep(0.005)
