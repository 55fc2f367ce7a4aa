"""The Starlette application: the kkiai predictions API under ``/replicate/v1``, plus files and stats.

::

    POST /replicate/v1/predictions                         create (201; honours Prefer: wait[=N])
    GET  /replicate/v1/predictions                         list, newest first
    GET  /replicate/v1/predictions/{id}                    get
    POST /replicate/v1/predictions/{id}/cancel             cancel
    GET  /replicate/v1/models/{owner}/{name}/versions/{v}  version + Cog OpenAPI schema
    GET  /files/{id}/{name}                                output files (no auth, like replicate.delivery)
    GET  /sandbox/stats    POST /sandbox/reset             counters for tests
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..catalog import Catalog, ModelSpec, default_catalog
from . import inputs, wire
from .config import SandboxConfig
from .models import OutputFile
from .openapi import version_json
from .stats import RequestCounter
from .store import Prediction, Store, model_error

API = "/replicate/v1"
PROBLEM_JSON = "application/problem+json"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

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


def problem_response(body: dict[str, Any]) -> JSONResponse:
    """``body`` as application/problem+json, with its ``status`` as the HTTP status."""
    return JSONResponse(body, status_code=int(body["status"]), media_type=PROBLEM_JSON)


class SandboxApi:
    """The request handlers and the state they share."""

    def __init__(self, config: SandboxConfig, *, catalog: Catalog, store: Store) -> None:
        self.config = config
        self.catalog = catalog
        self.store = store
        self.requests = RequestCounter()

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /sandbox/stats``."""
        return {"requests": self.requests.snapshot(), "predictions": self.store.counts()}

    def reset(self) -> None:
        """Zeroes the request counters and starts counting predictions afresh."""
        self.requests.reset()
        self.store.reset_counts()

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        expected = self.config.token
        return expected is None or secrets.compare_digest(token.encode(), expected.encode())

    def _link(self, request: Request, prediction: Prediction) -> Callable[[OutputFile], str]:
        root = str(request.base_url).rstrip("/")
        return lambda file: f"{root}/files/{prediction.id}/{quote(file.name)}"

    def _view(self, request: Request, prediction: Prediction) -> dict[str, Any]:
        snapshot = self.store.snapshot(prediction)
        return wire.prediction_json(
            prediction, snapshot, wall=self.store.wall, link=self._link(request, prediction)
        )

    def _model(self, version: Any) -> ModelSpec | None:
        """The model a create's ``version`` names; a bare ``owner/name`` is refused like the API does."""
        if not isinstance(version, str):
            return None
        model = self.catalog.find(version)
        if model is None or not version.endswith(model.version):
            return None
        return model

    def _prepare(self, model: ModelSpec, input: dict[str, Any]) -> tuple[dict[str, bytes], str | None]:
        """The input files, or the error the prediction will fail with."""
        marker = self.config.fail_marker
        if marker and inputs.find_marker(input, marker):
            return {}, model_error("input contained the fail marker")
        try:
            return inputs.resolve_files(model, input, self.store.file), None
        except inputs.InputFileError as exc:
            return {}, model_error(str(exc))

    async def create(self, request: Request) -> Response:
        """``POST /predictions``."""
        self.requests.count("create")
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
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
        files, error = self._prepare(model, input)
        prediction = self.store.create(model, input, files=files, planned_error=error)
        wait = parse_prefer(request.headers.get("prefer", ""))
        if wait is None:
            return JSONResponse(self._view(request, prediction), status_code=201)
        seconds, applied = wait
        snapshot = await self.store.settle(prediction, seconds)
        doc = wire.sync_json(
            prediction,
            snapshot,
            wall=self.store.wall,
            link=self._link(request, prediction),
            final_status=self.config.sync_final_status,
            data_uris=self.config.data_uri_outputs,
        )
        return JSONResponse(doc, status_code=201, headers={"Preference-Applied": applied})

    async def get(self, request: Request) -> Response:
        """``GET /predictions/{id}``."""
        self.requests.count("get")
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        prediction = self.store.get(request.path_params["prediction_id"])
        if prediction is None:
            return problem_response(wire.not_found())
        return JSONResponse(self._view(request, prediction))

    async def cancel(self, request: Request) -> Response:
        """``POST /predictions/{id}/cancel``."""
        self.requests.count("cancel")
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        prediction = self.store.get(request.path_params["prediction_id"])
        if prediction is None:
            return problem_response(wire.not_found())
        self.store.cancel(prediction)
        return JSONResponse(self._view(request, prediction))

    async def list_predictions(self, request: Request) -> Response:
        """``GET /predictions``: one page of the newest 100, newest first."""
        self.requests.count("list")
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        results = [self._view(request, p) for p in self.store.recent(100)]
        return JSONResponse({"next": None, "previous": None, "results": results})

    async def version(self, request: Request) -> Response:
        """``GET /models/{owner}/{name}/versions/{version}``."""
        self.requests.count("version")
        if not self._authorized(request):
            return problem_response(wire.unauthenticated())
        params = request.path_params
        model = self.catalog.find(params["version"])
        if model is None or model.ref != f"{params['owner']}/{params['name']}":
            return problem_response(wire.not_found())
        return JSONResponse(version_json(model))

    async def file(self, request: Request) -> Response:
        """``GET /files/{id}/{name}``: an output file, without auth."""
        self.requests.count("file")
        found = self.store.file(request.path_params["prediction_id"], request.path_params["name"])
        if found is None:
            return problem_response(wire.not_found())
        return Response(found.content, media_type=found.media_type)

    async def other(self, request: Request) -> Response:
        """Anything else: 404."""
        self.requests.count("other")
        return problem_response(wire.not_found())

    async def get_stats(self, request: Request) -> Response:
        """``GET /sandbox/stats``."""
        return JSONResponse(self.stats())

    async def post_reset(self, request: Request) -> Response:
        """``POST /sandbox/reset``: zero the counters; answers the (zeroed) stats."""
        self.reset()
        return JSONResponse(self.stats())

    def routes(self) -> list[Route]:
        """The routing table; the catch-all comes last."""
        prediction = API + "/predictions/{prediction_id:str}"
        return [
            Route(API + "/predictions", self.create, methods=["POST"]),
            Route(API + "/predictions", self.list_predictions, methods=["GET"]),
            Route(prediction, self.get, methods=["GET"]),
            Route(prediction + "/cancel", self.cancel, methods=["POST"]),
            Route(API + "/models/{owner}/{name}/versions/{version}", self.version, methods=["GET"]),
            Route("/files/{prediction_id:str}/{name:str}", self.file, methods=["GET"]),
            Route("/sandbox/stats", self.get_stats, methods=["GET"]),
            Route("/sandbox/reset", self.post_reset, methods=["POST"]),
            Route("/{path:path}", self.other, methods=ALL_METHODS),
        ]


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _invalid_input(invalid_fields: list[dict[str, Any]]) -> JSONResponse:
    detail = inputs.validation_detail(invalid_fields)
    body = wire.problem(422, detail, title="Input validation failed", invalid_fields=invalid_fields)
    return problem_response(body)


def _input_type_problem(input: Any) -> list[dict[str, Any]]:
    given = "null" if input is None else type(input).__name__
    description = f"Invalid type. Expected: object, given: {given}"
    return [{"type": "invalid_type", "field": "input", "description": description}]


def create_app(config: SandboxConfig | None = None, *, catalog: Catalog | None = None) -> Starlette:
    """The sandbox as an ASGI app; ``app.state.sandbox`` is its SandboxApi.

    Output files are drawn in a thread pool that the app's lifespan shuts down.
    """
    config = config or SandboxConfig()
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="kkiai-sandbox-render")
    store = Store(
        queue_seconds=config.queue_seconds, predict_seconds=config.predict_seconds, executor=executor
    )
    api = SandboxApi(config, catalog=catalog or default_catalog(), store=store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    app = Starlette(routes=api.routes(), lifespan=lifespan)
    app.state.sandbox = api
    return app
