"""Following predictions by webhook: the receiver, and what is known of each prediction it hears about.

Cog delivers a prediction's progress by POSTing it to the ``webhook`` URL given with the prediction;
:class:`WebhookReceiver` listens for those on loopback (a free port by default) and hands each body to a
callback, on the same loop as the client that started it, so no locking is needed. :class:`PredictionState`
holds one prediction's latest state: webhooks may arrive out of order (Cog sends ``processing`` and
``succeeded`` within a millisecond), so an update never moves a prediction backwards.

Every URL carries a random token: another local process cannot guess it, so cannot forge a result.
The receiver leaves signal handling alone (uvicorn would otherwise take SIGINT for itself, and Ctrl-C
would stop the receiver instead of the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..sockets import bind
from .client import nested_deeper
from .prediction import Prediction

log = logging.getLogger(__name__)

OnWebhook = Callable[[str, Mapping[str, Any]], None]
STARTUP_TIMEOUT = 10.0
MAX_WEBHOOK_BYTES = 16 * 1024 * 1024  # a webhook (or Cog answer) larger or deeper than this is refused
MAX_WEBHOOK_DEPTH = 64
_RANK = {"starting": 0, "processing": 1}  # any other status is terminal: rank 2


@dataclass(eq=False)
class PredictionState:
    """The latest known state of one prediction, and an event set (then replaced) on each change.

    Waiters take ``changed`` *before* looking at ``prediction``, so no change slips between the look
    and the wait, and none can clear another's wake-up. ``on_terminal`` is called once, when the
    prediction becomes terminal.
    """

    prediction: Prediction
    on_terminal: Callable[[], None] = lambda: None
    heard: bool = False  # an answer or a webhook about it has arrived
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self, update: Prediction) -> None:
        """Take in a webhook or the create's answer; ignored if it would move the prediction backwards."""
        self.heard = True
        current = self.prediction
        if current.terminal or _RANK.get(update.status, 2) < _RANK.get(current.status, 2):
            return
        now = utc_now()
        started = update.started_at or current.started_at
        self._set(
            dataclasses.replace(
                update,
                id=current.id,
                logs=update.logs if update.logs is not None else current.logs,
                metrics=update.metrics or current.metrics,
                created_at=update.created_at or current.created_at,
                started_at=started or (now if update.status != "starting" else None),
                completed_at=update.completed_at or (now if update.terminal else None),
            )
        )

    def end(self, status: str, error: str) -> None:
        """Settle the prediction here, when the server will not say how it ended."""
        self._set(dataclasses.replace(self.prediction, status=status, error=error, completed_at=utc_now()))

    async def settled(self, seconds: float) -> bool:
        """Whether the prediction is terminal within ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            changed = self.changed
            if self.prediction.terminal:
                return True
            if not await event_within(changed, deadline - time.monotonic()):
                return self.prediction.terminal

    def _set(self, prediction: Prediction) -> None:
        self.prediction = prediction
        self.changed.set()
        self.changed = asyncio.Event()
        if prediction.terminal:
            self.on_terminal()


async def event_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds``."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.0))
    except asyncio.TimeoutError:
        return False
    return True


def utc_now() -> str:
    """The time now as the API writes it: ``2026-01-02T03:04:05.123456Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Server(uvicorn.Server):
    """A uvicorn server that installs no signal handlers: the run owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebhookReceiver:
    """Receives ``POST /<token>/<prediction id>`` and calls ``on_webhook(prediction_id, body)``.

    ``host`` and ``port`` are where it listens (port 0: a free one); ``advertised_host`` is the host
    put in the URLs handed out, for a server that reaches this machine by another name (a Docker
    container: ``host.docker.internal``). Start with :meth:`start` (idempotent), stop with :meth:`aclose`.
    """

    def __init__(
        self,
        on_webhook: OnWebhook,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertised_host: str | None = None,
    ) -> None:
        self._on_webhook = on_webhook
        self._host, self._port = host, port
        self._advertised_host = advertised_host
        self._token = secrets.token_urlsafe(16)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._base_url: str | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Listen, if not yet listening; returns once connections are accepted."""
        async with self._lock:
            if self.running:
                return
            sock = bind(self._host, self._port)
            config = uvicorn.Config(
                self._app(),
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
                proxy_headers=False,
                timeout_graceful_shutdown=1,
            )
            server = _Server(config)
            task = asyncio.create_task(server.serve(sockets=[sock]), name="kkiai-cog-webhooks")
            try:
                await _started(server, task)
            except BaseException:
                server.should_exit = True
                sock.close()
                raise
            self._server, self._task = server, task
            port = sock.getsockname()[1]
            host = self._advertised_host or self._host
            self._base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            log.debug("webhook receiver listening on %s", self._base_url)

    def url_for(self, prediction_id: str) -> str:
        """The webhook URL for one prediction (after :meth:`start`)."""
        if self._base_url is None:
            raise RuntimeError("the webhook receiver has not been started")
        return f"{self._base_url}/{self._token}/{prediction_id}"

    async def aclose(self) -> None:
        """Stop listening; waits for uvicorn to shut down (a second at most for open connections)."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _app(self) -> Starlette:
        return Starlette(routes=[Route("/{token}/{prediction_id}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        if not secrets.compare_digest(request.path_params["token"], self._token):
            return Response(status_code=404)
        raw = await request.body()
        if len(raw) > MAX_WEBHOOK_BYTES or nested_deeper(raw, MAX_WEBHOOK_DEPTH):
            return Response("too large or too deeply nested", status_code=413)
        try:
            body = json.loads(raw)
        except ValueError:
            return Response("not JSON", status_code=400)
        if not isinstance(body, dict):
            return Response("not a JSON object", status_code=400)
        self._on_webhook(request.path_params["prediction_id"], body)
        return Response(status_code=200)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the webhook receiver stopped during startup")
        if loop.time() > deadline:
            raise RuntimeError(f"the webhook receiver did not start within {STARTUP_TIMEOUT:g} s")
        await asyncio.sleep(0.005)
