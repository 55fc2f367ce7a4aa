"""The Starlette application: the kkiai predictions API under ``/replicate/v1``, plus files and stats.

::

    POST /replicate/v1/predictions                         create (201; Prefer: wait[=N], Cancel-After)
    GET  /replicate/v1/predictions                         list, newest first
    GET  /replicate/v1/predictions/{id}                    get
    POST /replicate/v1/predictions/{id}/cancel             cancel
    GET  /replicate/v1/models/{owner}/{name}/versions/{v}  version + Cog OpenAPI schema (a model outside
                                                           the catalog: the generic stand-in's, generic.py)
    GET  /files/{id}/{name}                                output files (no auth, like replicate.delivery)
    GET  /sandbox/stats    POST /sandbox/reset             counters for tests

With ``token`` set, every route but ``/files`` wants it (the ``/sandbox`` ones included); a request
body over ``max_body_bytes`` is answered 413 without being read further.

Every request is counted (``stats``) and, for API calls, taken from a per-minute rate-limit window whose
state every API response reports in ``ratelimit-*`` headers (``ratelimits``). Injected faults
(``faults``): 5xx answers, 429s and drops before a create strike at the edge, before authentication;
drops after a create or halfway through a body (``drops``), slow answers, and predictions planned to
fail come later.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive

from ..api.prediction import parse_timestamp
from ..catalog import Catalog, ModelSpec, default_catalog
from . import deadlines, inputs, wire
from .config import SandboxConfig
from .database import Database, decode_cursor, encode_cursor
from .drops import Connections, Drop
from .faults import Faults
from .generic import generic_model
from .openapi import version_json
from .ratelimits import Bucket, Quota, RateLimiter
from .records import FileRef, Prediction
from .stats import DuplicateCounter, RequestCounter, RequestKind
from .store import Snapshot, Store, model_error
from .wire import problem_response

API = "/replicate/v1"
LIST_PAGE = 100  # predictions per page of GET /predictions, as the API pages them
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

Handler = Callable[[Request], Awaitable[Response]]
#: What a valid create asks for: the model, its input, and the deadline in seconds (or None).
CreateRequest = tuple[ModelSpec, dict[str, Any], float | None]
#: A prediction and its state, as the store answers a lookup.
Found = tuple[Prediction, Snapshot]

_PREFER_WAIT = re.compile(r"wait(?:=(\d{1,2}))?")


def parse_prefer(header: str) -> tuple[int, str] | None:
    """``(seconds, applied)`` for a valid ``Prefer: wait`` / ``wait=N`` (1..60), else None (ignored)."""
    for preference in header.split(","):
        token = preference.split(";", 1)[0].replace(" ", "")
        match = _PREFER_WAIT.fullmatch(token)
        if match is None:
            continue
        seconds = int(match[1]) if match[1] else 60
        if 1 <= seconds <= 60:
            return seconds, token
    return None


class SandboxApi:
    """The request handlers and the state they share."""

    def __init__(self, config: SandboxConfig, *, catalog: Catalog, store: Store) -> None:
        self.config = config
        self.catalog = catalog
        self.store = store
        self.requests = RequestCounter()
        self.faults = Faults(config)
        self.duplicates = DuplicateCounter()
        self.connections = Connections()
        self.limits = RateLimiter(
            create_per_minute=config.create_rate_per_minute,
            other_per_minute=config.other_rate_per_minute,
            clock=store.now,
        )
        #: Stops drawing and closes the store (``create_app`` sets it; the app's lifespan calls it).
        self.close: Callable[[], None] = lambda: None

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /sandbox/stats``."""
        return {
            "requests": self.requests.snapshot(),
            "predictions": self.store.counts(),
            "faults": self.faults.snapshot(),
            "duplicates": self.duplicates.duplicates,
        }

    def reset(self) -> None:
        """Zeroes the counters, re-seeds the faults, refills the rate limits, counts predictions afresh."""
        self.requests.reset()
        self.store.reset_counts()
        self.faults.reset()
        self.duplicates.reset()
        self.limits.reset()

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        expected = self.config.token
        return expected is None or secrets.compare_digest(token.encode(), expected.encode())

    def _link(self, request: Request, prediction: Prediction) -> Callable[[FileRef], str]:
        """File URLs on the host and port this request came to, so that a prediction made by an earlier
        sandbox process, since gone, is handed out with URLs that work."""
        root = str(request.base_url).rstrip("/")
        return lambda file: f"{root}/files/{prediction.id}/{quote(file.name)}"

    def _data_link(self, prediction: Prediction) -> Callable[[FileRef], str]:
        def link(ref: FileRef) -> str:
            file = self.store.file(prediction.id, ref.name)
            return wire.data_uri(file) if file is not None else ""

        return link

    def _view(self, request: Request, found: Found) -> dict[str, Any]:
        prediction, snapshot = found
        return wire.prediction_json(prediction, snapshot, link=self._link(request, prediction))

    def _model(self, version: Any) -> ModelSpec | None:
        """The model a create's ``version`` names; a bare ``owner/name`` is refused like the API does."""
        if not isinstance(version, str):
            return None
        model = self.catalog.find(version)
        if model is None or not version.endswith(model.version):
            return generic_model(version, self.catalog)
        return model

    def _prepare(self, model: ModelSpec, input: dict[str, Any]) -> tuple[dict[str, bytes], str | None, bool]:
        """The input files, or the error the prediction will fail with and whether it fails starting."""
        marker = self.config.fail_marker
        if marker and inputs.find_marker(input, marker):
            return {}, model_error("input contained the fail marker"), False
        try:
            files = inputs.resolve_files(model, input, self.store.file)
        except inputs.InputFileError as exc:
            return {}, model_error(str(exc)), False
        if self.faults.roll("fail"):
            error, starting = self.faults.failure()
            return {}, error, starting
        return files, None, False

    def _drop(self, partial: Response | None = None) -> Drop:
        return Drop(self.connections, partial=partial)

    def endpoint(self, kind: RequestKind, handler: Handler, *, bucket: Bucket | None) -> Handler:
        """``handler`` with what every request gets: counting, rate limits and their headers, slowness."""

        async def serve(request: Request) -> Response:
            self.requests.count(kind)
            # Read the whole request before answering early or dropping: closing a connection with
            # unread data resets it, and the client would see a reset instead of the answer or the drop.
            # Only up to the limit, though: a larger body is refused, and the connection closed.
            body = await read_capped(request, self.config.max_body_bytes)
            if body is None:
                too_large = wire.too_large(self.config.max_body_bytes)
                return problem_response(too_large, headers={"Connection": "close"})
            request = Request(request.scope, receive=_replay(body, request.receive))
            quota = self.limits.take(bucket) if bucket is not None else None
            if quota is not None and quota.exceeded and self.config.enforce_rate_limits:
                self.faults.count("rate_limited")
                response: Response = problem_response(wire.throttled(quota.reset), headers=quota.headers())
            else:
                response = await handler(request)
            if quota is not None:
                _report(quota, response)
            if not isinstance(response, Drop) and self.faults.roll("slow"):
                await self.store.idle(self.config.slow_seconds)
            return response

        return serve

    async def create(self, request: Request) -> Response:
        """``POST /predictions``."""
        if self.faults.roll("create_429"):
            return self.faults.throttled()
        if self.faults.roll("drop_before_create"):
            return self._drop()
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        checked = await self._check_create(request)
        if isinstance(checked, Response):
            return checked
        model, input, cancel_after = checked
        files, error, starting = self._prepare(model, input)
        prediction = self.store.create(
            model, input, files=files, planned_error=error, fails_starting=starting, cancel_after=cancel_after
        )
        self.duplicates.add(model.version, prediction.input)
        if self.faults.roll("drop_after_create"):
            return self._drop()
        return await self._created(request, prediction)

    async def _check_create(self, request: Request) -> CreateRequest | Response:
        """The model, input and deadline a create asks for, or the error answer."""
        body = await _json_object(request)
        if body is None:
            return problem_response(
                wire.problem(400, "The request body must be a JSON object.", title="Bad request")
            )
        model = self._model(body.get("version"))
        if model is None:
            return problem_response(wire.invalid_version())
        input = body.get("input")
        if not isinstance(input, dict):
            return _invalid_input(_input_type_problem(input))
        invalid = inputs.check_input(model, input)
        if invalid:
            return _invalid_input(invalid)
        header = request.headers.get("cancel-after")
        try:
            cancel_after = deadlines.cancel_after(header, minimum=self.config.min_cancel_after_seconds)
        except deadlines.CancelAfterError as exc:
            return problem_response(wire.problem(400, str(exc), title="Invalid Cancel-After header"))
        return model, input, cancel_after

    async def _created(self, request: Request, prediction: Prediction) -> Response:
        """The 201 of a create: at once, or once settled when ``Prefer: wait`` asks for it."""
        wait = parse_prefer(request.headers.get("prefer", ""))
        if wait is None:
            found = self.store.lookup(prediction.id) or (prediction, Snapshot("starting"))
            return JSONResponse(self._view(request, found), status_code=201)
        seconds, applied = wait
        prediction, snapshot = await self.store.settle(prediction.id, seconds)
        doc = wire.sync_json(
            prediction,
            snapshot,
            link=self._link(request, prediction),
            final_status=self.config.sync_final_status,
            data_link=self._data_link(prediction) if self.config.data_uri_outputs else None,
        )
        return JSONResponse(doc, status_code=201, headers={"Preference-Applied": applied})

    def _prediction_or_error(self, request: Request) -> Found | Response:
        """The prediction a ``/predictions/{id}...`` request names, or the error to answer instead
        (an injected 5xx, 401, 404)."""
        if self.faults.roll("poll_5xx"):
            return self.faults.server_error()
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        found = self.store.lookup(request.path_params["prediction_id"])
        return problem_response(wire.not_found()) if found is None else found

    async def get(self, request: Request) -> Response:
        """``GET /predictions/{id}``."""
        found = self._prediction_or_error(request)
        if isinstance(found, Response):
            return found
        response = JSONResponse(self._view(request, found))
        if self.faults.roll("drop_poll"):
            return self._drop(response)
        return response

    async def cancel(self, request: Request) -> Response:
        """``POST /predictions/{id}/cancel``."""
        found = self._prediction_or_error(request)
        if isinstance(found, Response):
            return found
        prediction_id = found[0].id
        self.store.cancel(prediction_id)
        return JSONResponse(self._view(request, self.store.lookup(prediction_id) or found))

    async def list_predictions(self, request: Request) -> Response:
        """``GET /predictions[?created_after=&created_before=&cursor=]``: pages of 100, newest first.

        Every prediction of the store is listed, whichever sandbox process made it. The cursor is
        opaque and marks the last prediction shown, so predictions created meanwhile do not shift the
        pages. ``next`` is an api.replicate.com URL, as pass-through proxies hand out: clients must
        take its cursor, not follow it.
        """
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        params = request.query_params
        page, next_cursor = self.store.page(
            limit=LIST_PAGE,
            after=decode_cursor(params.get("cursor")),
            created_after=_unix_time(params.get("created_after")),
            created_before=_unix_time(params.get("created_before")),
        )
        results = [self._view(request, found) for found in page]
        filters = {name: params[name] for name in ("created_after", "created_before") if params.get(name)}
        query = urlencode({"cursor": encode_cursor(next_cursor), **filters}) if next_cursor else ""
        next_url = f"{wire.UPSTREAM_API}/predictions?{query}" if next_cursor else None
        return JSONResponse({"next": next_url, "previous": None, "results": results})

    async def version(self, request: Request) -> Response:
        """``GET /models/{owner}/{name}/versions/{version}``."""
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        params = request.path_params
        ref = f"{params['owner']}/{params['name']}"
        model = self.catalog.find(params["version"]) or generic_model(
            f"{ref}:{params['version']}", self.catalog
        )
        if model is None or model.ref != ref:
            return problem_response(wire.not_found())
        return JSONResponse(version_json(model))

    async def file(self, request: Request) -> Response:
        """``GET /files/{id}/{name}``: an output file, without auth."""
        if self.faults.roll("file_5xx"):
            return self.faults.server_error()
        found = self.store.file(request.path_params["prediction_id"], request.path_params["name"])
        if found is None:
            return problem_response(wire.not_found())
        response = Response(found.content, media_type=found.media_type)
        if self.faults.roll("drop_file"):
            return self._drop(response)
        return response

    async def other(self, request: Request) -> Response:
        """Anything else: 404 (401 first when a token is set and not given)."""
        if self._refused(request):
            return problem_response(wire.unauthenticated())
        return problem_response(wire.not_found())

    async def get_stats(self, request: Request) -> Response:
        """``GET /sandbox/stats``."""
        if self._refused(request):
            return problem_response(wire.unauthenticated())
        return JSONResponse(self.stats())

    async def post_reset(self, request: Request) -> Response:
        """``POST /sandbox/reset``: zero the counters; answers the (zeroed) stats."""
        if self._refused(request):
            return problem_response(wire.unauthenticated())
        self.reset()
        return JSONResponse(self.stats())

    def _refused(self, request: Request) -> bool:
        """Whether a route that the API does not have must refuse ``request``: only when a token is
        set (tests without one drive these routes bare) and the request does not carry it."""
        return self.config.token is not None and not self._authorized(request)

    def routes(self) -> list[Route]:
        """The routing table; the catch-all comes last."""
        prediction = API + "/predictions/{prediction_id:str}"
        wrap = self.endpoint
        return [
            Route(API + "/predictions", wrap("create", self.create, bucket="create"), methods=["POST"]),
            Route(API + "/predictions", wrap("list", self.list_predictions, bucket="other"), methods=["GET"]),
            Route(prediction, wrap("get", self.get, bucket="other"), methods=["GET"]),
            Route(prediction + "/cancel", wrap("cancel", self.cancel, bucket="other"), methods=["POST"]),
            Route(
                API + "/models/{owner}/{name}/versions/{version}",
                wrap("version", self.version, bucket="other"),
                methods=["GET"],
            ),
            Route(
                "/files/{prediction_id:str}/{name:str}", wrap("file", self.file, bucket=None), methods=["GET"]
            ),
            Route("/sandbox/stats", self.get_stats, methods=["GET"]),
            Route("/sandbox/reset", self.post_reset, methods=["POST"]),
            Route("/{path:path}", wrap("other", self.other, bucket="other"), methods=ALL_METHODS),
        ]


def _report(quota: Quota, response: Response) -> None:
    """Adds the ``ratelimit-*`` headers, unless the response already has them or is the edge's HTML."""
    shown = response.partial if isinstance(response, Drop) else response
    if shown is None or shown.media_type == "text/html":
        return
    for name, value in quota.headers().items():
        shown.headers.setdefault(name, value)


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it is known to exceed ``limit`` bytes: from its
    ``Content-Length`` before reading anything, else once the chunks read so far pass the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the handlers the body already read, then the connection's own events
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _unix_time(text: str | None) -> float | None:
    moment = parse_timestamp(text)
    return moment.timestamp() if moment is not None else None


def _invalid_input(invalid_fields: list[dict[str, Any]]) -> JSONResponse:
    detail = inputs.validation_detail(invalid_fields)
    body = wire.problem(422, detail, title="Input validation failed", invalid_fields=invalid_fields)
    return problem_response(body)


def _input_type_problem(input: Any) -> list[dict[str, Any]]:
    given = "null" if input is None else type(input).__name__
    description = f"Invalid type. Expected: object, given: {given}"
    return [{"type": "invalid_type", "field": "input", "description": description}]


def _by_version(catalog: Catalog, version: str) -> ModelSpec | None:
    """The model of a stored prediction: a catalog model by its hash, a generic one by its full ref."""
    model = catalog.find(version)
    return model if model is not None and model.version == version else generic_model(version, catalog)


def create_app(config: SandboxConfig | None = None, *, catalog: Catalog | None = None) -> Starlette:
    """The sandbox as an ASGI app; ``app.state.sandbox`` is its SandboxApi.

    ``config.store`` must name the store directory (``serve_in_thread`` and ``kkiai-sandbox`` fill in
    the default); raises ``StoreError`` when it cannot be opened. Output files are drawn in a thread
    pool; the app's lifespan shuts it down and then closes the store.
    """
    config = config or SandboxConfig()
    if config.store is None:
        raise ValueError("SandboxConfig.store must name the directory of the sandbox's store")
    catalog = catalog or default_catalog()
    database = Database(config.store, models=lambda version: _by_version(catalog, version))
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="kkiai-sandbox-render")
    store = Store(
        database,
        queue_seconds=config.queue_seconds,
        predict_seconds=config.predict_seconds,
        file_ttl=config.file_ttl,
        executor=executor,
    )
    api = SandboxApi(config, catalog=catalog, store=store)

    def close() -> None:
        executor.shutdown(wait=True, cancel_futures=True)
        store.close()
        database.close()

    api.close = close

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            api.close()

    app = Starlette(routes=api.routes(), lifespan=lifespan)
    app.state.sandbox = api
    return app
