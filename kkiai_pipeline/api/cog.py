"""The Cog backend: the same predictions, run on self-hosted Cog servers (``docker run -p 5000:5000 ...``).

Each model (``owner/name``) is mapped to the URL of the Cog server that serves it. What a Cog server
offers, as coglet 0.23.1 really behaves:

- ``PUT /predictions/{id}`` starts a prediction under an id we choose; with ``Prefer: respond-async``
  it answers 202 at once. Re-sent while that id runs, it answers the current state; re-sent after the
  prediction finished, it **runs it again**: Cog forgets finished predictions.
- ``GET /predictions/{id}`` is not served (405): nothing can be polled.
- A synchronous PUT or POST holds the connection until the prediction ends, and if the client goes away
  coglet **cancels** the prediction; the result exists only in that one response.
- PredictionState goes to the ``webhook`` URL given with the prediction; the terminal webhook is retried
  (0.2 s, 0.4 s, ... doubling) until it is accepted.
- ``POST /predictions/{id}/cancel`` answers 200 (the ``canceled`` webhook follows) or 404 (not running).
- ``GET /health-check`` says ``STARTING``, ``READY``, ``BUSY`` (every slot taken), ``SETUP_FAILED``,
  ``UNHEALTHY`` or ``DEFUNCT``; a PUT while every slot is taken is answered 409, before setup is done 503.
  A slot frees a moment *after* its prediction's answer or webhook, so the next PUT may meet a 409.

**How a prediction is followed: a webhook receiver, and a create that is never re-sent once it may
have arrived.** The client picks the id, registers it with a local webhook receiver
(:mod:`.webhooks`), and PUTs the prediction with ``Prefer: respond-async``. The outcome then arrives
as its own request, which coglet retries, so no connection has to stay open for the whole prediction.
A synchronous PUT was rejected: a dropped connection or a read timeout would cancel the prediction and
lose its result, and the only way to learn it again is to re-send the PUT, which runs it again if it
had finished meanwhile. So a retry could run a prediction twice, whatever id it carries.

A PUT is retried only when it certainly created nothing: the connection failed before sending, or the
server answered 409 (busy) or 503 (not set up yet). After any other failure (a read timeout, a dropped
connection) the prediction may be running, and the PUT is **not** sent again: the client follows the
id by webhook as if the 202 had come. While a prediction is followed and no webhook arrives, the
client checks the health-check now and then; if the server stays unreachable, or idle (``READY`` with
one slot) for ``lost_after`` seconds with no result, :class:`CogPredictionLost` is raised (never a
second PUT). A Ctrl-C or a deadline ends in :meth:`CogClient.cancel`, which waits for the ``canceled``
webhook.

One prediction at a time per server: a semaphore per server URL is taken before the PUT and given back
when the prediction is terminal (or canceled, or lost). A Cog server does not report how many slots it
has (the health-check has no such field; ``concurrency.max`` in cog.yaml sets it), so the count comes
from configuration (``concurrency``, default 1). The semaphore is a courtesy that spares 409s: a 409
is always waited out (up to ``busy_timeout``), so a wrong count, or another client on the same server,
costs waiting, never a failure or a duplicate.

Before the first prediction on a server the client waits until its health-check says READY or BUSY
(``ready_timeout``), failing early when it refuses connections for ``unreachable_timeout`` or reports
that its setup failed. Outputs are Cog's ``data:`` URIs. ``cancel_after`` is not sent (Cog has no such
deadline); the step's own deadline still cancels. Cog keeps no record of predictions, so :meth:`get`
answers only for predictions this process followed, and :meth:`find_created` always returns None.

The webhook receiver listens on 127.0.0.1: the Cog server must be able to reach it there (coglet run
directly, or a container started with ``--network host``); otherwise set ``webhook_host`` and
``webhook_advertised_host`` (for instance ``0.0.0.0`` and ``host.docker.internal``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from ..errors import ApiError, ConfigError, DeadlineExceeded, KkiaiError, TransportError, ValidationFailed
from ..secrets import refuse_in_body
from .backend import OnSend, Update
from .client import ClientStats, nested_deeper
from .prediction import Prediction, parse_prediction
from .retries import Verdict, exception_verdict
from .webhooks import MAX_WEBHOOK_DEPTH, PredictionState, WebhookReceiver, event_within, utc_now

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

_UP = frozenset({"READY", "BUSY"})
_BROKEN = frozenset({"SETUP_FAILED", "DEFUNCT"})
_EVENTS = ["start", "completed"]  # no "output" / "logs" webhooks: the completed one carries both
_PUT_ATTEMPTS = 5  # PUTs that failed before sending, or met a server that was not set up
_CANCEL_REPEAT_SECONDS = 1.0  # a cancel the server has not confirmed within this is sent again


class CogServerUnavailable(TransportError):
    """A Cog server could not be reached, or was not ready in time, or its setup failed."""

    def __init__(self, message: str, *, model: str, url: str) -> None:
        self.model, self.url = model, url
        super().__init__(message)


class CogPredictionLost(TransportError):
    """The server stopped knowing a followed prediction (it was never received, or the server restarted).

    The prediction is not sent again: it might have run already.
    """

    def __init__(self, message: str, *, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__(message)


class CogPredictionUnknown(KkiaiError):
    """A prediction id this process never followed: Cog keeps no record to look it up in."""

    def __init__(self, prediction_id: str) -> None:
        self.prediction_id = prediction_id
        super().__init__(
            f"prediction {prediction_id} is not known to this process, and a Cog server keeps no record "
            "of predictions (GET /predictions/{id} is not served), so it cannot be re-attached: run the "
            "step again"
        )


@dataclass(frozen=True)
class CogOptions:
    """Patience and networking of :class:`CogClient` (seconds throughout)."""

    ready_timeout: float = 300.0  # a server may report STARTING (loading weights) this long
    unreachable_timeout: float = 30.0  # ... and refuse connections this long, before we give up
    health_interval: float = 0.5  # between health-checks while waiting for readiness
    busy_timeout: float = 600.0  # PUTs answered 409 (all slots taken) are retried this long
    busy_interval: float = 0.5  # between such PUTs
    watch_interval: float = 5.0  # a followed prediction with no webhook this long: check the server
    lost_after: float = 30.0  # server idle or unreachable this long, no result: the prediction is lost
    cancel_timeout: float = 10.0  # how long cancel() waits for the "canceled" webhook
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    webhook_host: str = "127.0.0.1"  # where the webhook receiver listens
    webhook_port: int = 0  # 0: a free port
    webhook_advertised_host: str | None = None  # the host named in webhook URLs (default: webhook_host)

    def __post_init__(self) -> None:
        for name in ("ready_timeout", "unreachable_timeout", "busy_timeout", "lost_after", "cancel_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"cog.{name} must not be negative, not {getattr(self, name)}")


@dataclass
class _Server:
    """One Cog server: its slots, and whether it has been seen ready."""

    url: str
    concurrency: int
    slots: asyncio.Semaphore
    ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class _Followed:
    """A prediction this client created: its progress, and the server slot it holds until terminal."""

    model: str
    server: _Server
    progress: PredictionState
    holds_slot: bool = True
    quiet_since: float | None = None  # since when the server has looked idle or unreachable

    def __post_init__(self) -> None:
        self.progress.on_terminal = self.release

    @property
    def prediction(self) -> Prediction:
        return self.progress.prediction

    def release(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.server.slots.release()


class CogClient:
    """A :class:`~.backend.PredictionBackend` over Cog servers; use as ``async with``.

    ``servers`` maps ``owner/name`` to a server's base URL; ``concurrency`` optionally maps
    ``owner/name`` to how many predictions its server runs at once (default 1). ``transport`` and
    ``sleep`` are for tests.
    """

    def __init__(
        self,
        *,
        servers: Mapping[str, str],
        concurrency: Mapping[str, int] | None = None,
        options: CogOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.options = options = options or CogOptions()
        self.stats = ClientStats()
        self._servers = _servers(servers, concurrency or {})
        self._models = {model: self._servers[_base_url(url)] for model, url in servers.items()}
        self._followed: dict[str, _Followed] = {}
        self._sleep = sleep
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        # trust_env=False: a proxy meant for the internet must not stand between us and our own servers.
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False)
        self._receiver = WebhookReceiver(
            self._on_webhook,
            host=options.webhook_host,
            port=options.webhook_port,
            advertised_host=options.webhook_advertised_host,
        )

    async def __aenter__(self) -> CogClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the webhook receiver and close connections (running predictions are left alone)."""
        await self._receiver.aclose()
        await self._http.aclose()

    reattach = False  # a Cog server keeps no record a later process could follow
    lookup = False  # nor a list of predictions
    server_offset = 0.0

    async def create(
        self,
        version: str,
        input: Mapping[str, Any],
        *,
        cancel_after: float | None = None,
        on_send: OnSend | None = None,
    ) -> Prediction:
        """Start a prediction of ``version`` (``owner/name:<hash>``) on its model's server.

        Waits for a free slot on that server, and for the server to be ready the first time. Returns
        the prediction as ``starting`` with the id we chose. ``cancel_after`` is ignored: Cog has no
        server-side deadline.
        """
        refuse_in_body(input)
        model = version.partition(":")[0]
        server = self._server_for(model)
        await self._start_receiver()
        await server.slots.acquire()
        try:
            await self._ensure_ready(server, model)
            if on_send is not None:
                await on_send()
        except BaseException:
            server.slots.release()
            raise
        return await self._submit(server, model, dict(input))  # the prediction holds the slot from here

    async def wait(
        self, prediction: Prediction, *, on_update: Update | None = None, deadline: float | None = None
    ) -> Prediction:
        """Follow ``prediction`` by webhook until it is terminal; ``on_update`` hears status changes.

        Raises :class:`DeadlineExceeded` past ``deadline`` (``time.monotonic()``) without canceling,
        and :class:`CogPredictionLost` when the server no longer runs it and sent no result.
        """
        followed = self._followed_or_raise(prediction.id)
        seen = prediction
        while True:
            changed, latest = followed.progress.changed, followed.prediction
            if on_update is not None and latest.status != seen.status:
                await on_update(latest)
            seen = latest
            if latest.terminal:
                return latest
            pause = self.options.watch_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(
                        f"prediction {latest.id} was still {latest.status} when its deadline passed",
                        prediction=latest,
                    )
                pause = min(pause, remaining)
            if not await event_within(changed, pause) and not followed.prediction.terminal:
                await self._watch(followed)

    async def cancel(self, prediction_id: str) -> Prediction:
        """Ask the server to cancel, and wait (``cancel_timeout``) for it to say ``canceled``.

        The server slot is given back in any case: a prediction the server still runs would only make
        the next PUT wait (409).
        """
        followed = self._followed_or_raise(prediction_id)
        if followed.prediction.terminal:
            return followed.prediction
        url = f"{followed.server.url}/predictions/{prediction_id}/cancel"
        # A cancel that lands while the worker is still picking the prediction up can be lost, so it
        # is repeated (cancel is idempotent) until the server confirms or cancel_timeout runs out.
        end = time.monotonic() + self.options.cancel_timeout
        while True:
            try:
                response = await self._send("POST", url)
            except httpx.TransportError as exc:
                followed.release()
                raise TransportError(f"cannot cancel prediction {prediction_id} at {url}: {exc!r}") from exc
            if response.is_error and response.status_code != 404:
                followed.release()
                raise _api_error(response, model=followed.model)
            remaining = end - time.monotonic()
            if await followed.progress.settled(min(_CANCEL_REPEAT_SECONDS, max(remaining, 0))):
                return followed.prediction
            if remaining <= _CANCEL_REPEAT_SECONDS or response.status_code == 404:
                break
        said = "had no such prediction running" if response.status_code == 404 else "did not confirm"
        followed.progress.end("canceled", f"asked the Cog server to cancel it; it {said}")
        return followed.prediction

    def server_url(self, version: str) -> str:
        """The URL of the Cog server that runs ``version`` (for a cache identity such as ``cog:<url>``)."""
        return self._server_for(version.partition(":")[0]).url

    async def get(self, prediction_id: str) -> Prediction:
        """The last state this process knows; :class:`CogPredictionUnknown` for any other id."""
        return self._followed_or_raise(prediction_id).prediction

    async def find_created(
        self, version: str, input: Mapping[str, Any], *, since: datetime
    ) -> Prediction | None:
        """Always None: a Cog server keeps no list of predictions (and creates are never lost here)."""
        return None

    # -- creating --------------------------------------------------------------------------------

    async def _start_receiver(self) -> None:
        try:
            await self._receiver.start()
        except OSError as exc:
            where = f"{self.options.webhook_host}:{self.options.webhook_port}"
            raise ConfigError(f"cannot listen for Cog webhooks on {where}: {exc}") from exc

    def _server_for(self, model: str) -> _Server:
        server = self._models.get(model)
        if server is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise ConfigError(
                f"no Cog server is configured for model '{model}' (configured: {known}); "
                f"add it to cog.servers, e.g. 'cog.servers={{{model}:http://127.0.0.1:5000}}' "
                "(the map lists every model's server)"
            )
        return server

    async def _submit(self, server: _Server, model: str, input: dict[str, Any]) -> Prediction:
        """PUT the prediction, again only while it certainly created nothing (see the module doc)."""
        prediction_id = secrets.token_hex(13)
        created = Prediction(id=prediction_id, status="starting", created_at=utc_now())
        followed = _Followed(model, server, PredictionState(created))
        self._followed[prediction_id] = followed  # before the PUT: webhooks may beat its answer
        body = {
            "id": prediction_id,
            "input": input,
            "webhook": self._receiver.url_for(prediction_id),
            "webhook_events_filter": _EVENTS,
        }
        busy_until, attempt = time.monotonic() + self.options.busy_timeout, 0
        try:
            while True:
                attempt += 1
                outcome = await self._put(followed, body)
                if isinstance(outcome, Prediction):
                    return outcome
                await self._before_retry(server, model, outcome, attempt=attempt, busy_until=busy_until)
        except BaseException:
            if not followed.progress.heard:
                del self._followed[prediction_id]
            followed.release()  # should it run after all, a later PUT waits for it (409)
            raise

    async def _put(self, followed: _Followed, body: dict[str, Any]) -> Prediction | str:
        """One PUT: the prediction, or why to retry (409, 503, an exception that sent nothing)."""
        url = f"{followed.server.url}/predictions/{followed.prediction.id}"
        try:
            response = await self._send("PUT", url, create=True, json=body, prefer_async=True)
        except httpx.TransportError as exc:
            verdict = exception_verdict(exc, create=True)
            if verdict is Verdict.FAIL:
                raise TransportError(f"PUT {url} failed: {exc!r}") from exc
            if verdict is Verdict.AMBIGUOUS:
                return self._unconfirmed(followed, url, type(exc).__name__)
            return type(exc).__name__
        status = response.status_code
        if not response.is_error:
            return self._confirmed(followed, response)
        if status in (409, 503):
            return str(status)
        if status >= 500:  # a proxy's 502 may hide a PUT that arrived
            return self._unconfirmed(followed, url, f"answered {status}")
        raise _api_error(response, model=followed.model)

    def _confirmed(self, followed: _Followed, response: httpx.Response) -> Prediction:
        try:
            answer = parse_prediction(response.json())
        except ValueError as exc:
            raise ApiError(
                f"the Cog server for '{followed.model}' answered PUT {response.request.url} with something "
                f"that is not a prediction: {exc}",
                status_code=response.status_code,
            ) from exc
        if answer.id not in (None, followed.prediction.id):
            raise ApiError(
                f"the Cog server for '{followed.model}' answered PUT {response.request.url} about another "
                f"prediction ({answer.id})",
                status_code=response.status_code,
            )
        followed.progress.update(answer)
        return followed.prediction

    def _unconfirmed(self, followed: _Followed, url: str, reason: str) -> Prediction:
        self.stats.ambiguous_creates += 1
        log.warning(
            "PUT %s failed after sending (%s): following the prediction by webhook; it is not sent "
            "again, so that it cannot run twice",
            url,
            reason,
        )
        return followed.prediction

    async def _before_retry(
        self, server: _Server, model: str, reason: str, *, attempt: int, busy_until: float
    ) -> None:
        """Wait before PUTting again: for a free slot (409), or for the server to be ready again."""
        if reason == "409":
            if time.monotonic() >= busy_until:
                raise CogServerUnavailable(
                    f"the Cog server for '{model}' at {server.url} stayed busy (409, all prediction slots "
                    f"taken) for {self.options.busy_timeout:g} s: is another client using it?",
                    model=model,
                    url=server.url,
                )
            self.stats.note_retry(reason, self.options.busy_interval)
            await self._sleep(self.options.busy_interval)
            return
        if attempt >= _PUT_ATTEMPTS:
            raise CogServerUnavailable(
                f"the Cog server for '{model}' at {server.url} did not take the prediction after "
                f"{attempt} attempts ({reason})",
                model=model,
                url=server.url,
            )
        self.stats.note_retry(reason, self.options.health_interval)
        await self._sleep(self.options.health_interval)
        server.ready = False
        await self._ensure_ready(server, model)

    # -- readiness and watching --------------------------------------------------------------------

    async def _ensure_ready(self, server: _Server, model: str) -> None:
        """Return once the health-check says READY or BUSY; the first caller polls, the others wait."""
        async with server.lock:
            started, unreachable_since = time.monotonic(), None
            while not server.ready:
                status, problem = await self._health(server, model)
                now = time.monotonic()
                server.ready = status in _UP
                unreachable_since = (unreachable_since or now) if status is None else None
                where = f"the Cog server for '{model}' at {server.url}"
                if server.ready:
                    return
                if (
                    unreachable_since is not None
                    and now - unreachable_since >= self.options.unreachable_timeout
                ):
                    raise CogServerUnavailable(
                        f"cannot reach {where} ({problem}); is it running?", model=model, url=server.url
                    )
                if now - started >= self.options.ready_timeout:
                    message = f"{where} was not ready after {self.options.ready_timeout:g} s ({problem})"
                    raise CogServerUnavailable(message, model=model, url=server.url)
                await self._sleep(self.options.health_interval)

    async def _health(self, server: _Server, model: str) -> tuple[str | None, str]:
        """The health-check's status (None: unreachable) and what to say about it; raises when hopeless."""
        url = f"{server.url}/health-check"
        try:
            response = await self._send("GET", url)
        except httpx.TransportError as exc:
            return None, (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        body = _json(response)
        status = body.get("status") if isinstance(body, dict) else None
        if response.is_error or not isinstance(status, str):
            raise CogServerUnavailable(
                f"{url} answered {response.status_code} without a Cog health status: is it a Cog server?",
                model=model,
                url=server.url,
            )
        if status in _BROKEN:
            setup = body.get("setup") if isinstance(body, dict) else None
            logs = str(setup.get("logs") or "").strip() if isinstance(setup, dict) else ""
            detail = f": {logs.splitlines()[-1]}" if logs else ""
            raise CogServerUnavailable(
                f"the Cog server for '{model}' at {server.url} reports {status}{detail}",
                model=model,
                url=server.url,
            )
        return status, f"health-check says {status}"

    async def _watch(self, followed: _Followed) -> None:
        """No webhook for a while: does the server still run the prediction? Raise once surely not."""
        try:
            status, problem = await self._health(followed.server, followed.model)
        except CogServerUnavailable as exc:  # SETUP_FAILED, DEFUNCT: it runs nothing any more
            followed.progress.end("failed", str(exc))
            raise
        now = time.monotonic()
        if status is not None and (status != "READY" or followed.server.concurrency > 1):
            followed.quiet_since = None  # busy (or can't tell): maybe with ours
            return
        followed.quiet_since = followed.quiet_since or now
        if now - followed.quiet_since < self.options.lost_after:
            return
        pid, after = followed.prediction.id, f"{self.options.lost_after:g} s"
        server = f"the Cog server for '{followed.model}' at {followed.server.url}"
        if followed.progress.heard:
            message = (
                f"prediction {pid} was lost: {server} no longer runs it and sent no result in {after} "
                f"({problem}); did the server restart?"
            )
        else:
            message = (
                f"prediction {pid} was lost: the answer to its PUT never came, and {server} has not "
                f"reported it in {after} ({problem}). It was not sent again, so that it cannot run twice"
            )
        followed.progress.end("failed", message)
        raise CogPredictionLost(message, prediction=followed.prediction)

    # -- plumbing ----------------------------------------------------------------------------------

    def _on_webhook(self, prediction_id: str, body: Mapping[str, Any]) -> None:
        followed = self._followed.get(prediction_id)
        if followed is None:
            log.debug("webhook for unknown prediction %s ignored", prediction_id)
            return
        try:
            followed.progress.update(parse_prediction(body))
        except ValueError as exc:
            log.warning("webhook for prediction %s ignored: %s", prediction_id, exc)

    def _followed_or_raise(self, prediction_id: str | None) -> _Followed:
        followed = self._followed.get(prediction_id or "")
        if followed is None:
            raise CogPredictionUnknown(str(prediction_id))
        return followed

    async def _send(
        self, method: str, url: str, *, create: bool = False, prefer_async: bool = False, **kwargs: Any
    ) -> httpx.Response:
        self.stats.requests += 1
        if create:
            self.stats.creates += 1
        headers = {"Prefer": "respond-async"} if prefer_async else None
        return await self._http.request(method, url, headers=headers, **kwargs)


def _servers(servers: Mapping[str, str], concurrency: Mapping[str, int]) -> dict[str, _Server]:
    """One :class:`_Server` per distinct URL; models sharing a URL share its slots (the fewest asked)."""
    unknown = sorted(set(concurrency) - set(servers))
    if unknown:
        raise ConfigError(f"concurrency is set for models without a Cog server: {', '.join(unknown)}")
    counts: dict[str, int] = {}
    for model, url in servers.items():
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"the Cog server of '{model}' must be an http(s) URL, not {url!r}")
        count = concurrency.get(model, 1)
        if count < 1:
            raise ConfigError(f"the concurrency of '{model}' must be at least 1, not {count}")
        base = _base_url(url)
        counts[base] = min(counts.get(base, count), count)
    return {url: _Server(url, count, asyncio.Semaphore(count)) for url, count in counts.items()}


def _base_url(url: str) -> str:
    return url.rstrip("/")


def _api_error(response: httpx.Response, *, model: str) -> ApiError:
    """ApiError for an error answer; ValidationFailed for Cog's 422 (FastAPI-style ``detail`` list)."""
    body = _json(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    error = body.get("error") if isinstance(body, dict) else None
    request = response.request
    message = (
        f"the Cog server for '{model}' answered {response.status_code} to {request.method} {request.url}"
    )
    if response.status_code == 422 and isinstance(detail, list):
        invalid = [_invalid_field(item) for item in detail if isinstance(item, dict)]
        fields = "; ".join(f"{f['field']}: {f['description']}" for f in invalid)
        return ValidationFailed(
            f"{message}: invalid input [{fields}]",
            invalid_fields=invalid,
            status_code=422,
            title="Unprocessable Entity",
            body=body,
        )
    said = error or (detail if isinstance(detail, str) else None) or response.reason_phrase
    return ApiError(f"{message}: {said}", status_code=response.status_code, detail=said, body=body)


def _invalid_field(item: Mapping[str, Any]) -> dict[str, Any]:
    location = [str(part) for part in item.get("loc") or []]
    if "input" in location:
        location = location[location.index("input") + 1 :]
    return {"field": ".".join(location) or "input", "description": str(item.get("msg") or "invalid")}


def _json(response: httpx.Response) -> Any:
    """The answer's JSON, or None (also for one nested deep enough to exhaust the parser)."""
    if nested_deeper(response.content, MAX_WEBHOOK_DEPTH):
        return None
    try:
        return response.json()
    except ValueError:
        return None
