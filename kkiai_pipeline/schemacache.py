"""Fetching the schemas of models outside the catalog, once, at planning, into the cache directory.

:func:`with_fetched_models` runs before a pipeline is planned (also for a dry run): every step naming an
``owner/name:<version>`` the catalog does not know gets that model's schema from where the step runs:

- the kkiai API: ``GET {base_url}/models/{owner}/{name}/versions/{version}`` (its ``openapi_schema``);
- a Cog server: ``GET {server}/openapi.json`` (503 while it sets up: waited for, up to ``cog.ready_timeout``);
- the sandbox (``api=sandbox``): its generic stand-in's schema, asked in-process (and not kept).

A schema is kept in ``<cache_dir>/schemas/`` keyed by the service's identity (as prediction keys name
it: ``kkiai:<base_url>``, ``cog:<server>``, ``sandbox``) and the version, written atomically; a later
plan reads it instead of asking again. Reading it trusts nothing: a file too large, nested too deep, for
another service or version, or whose schema does not parse is ignored (and fetched again).

A model whose schema cannot be had is one problem per step (field ``model``), which ``make_plan``
reports with the plan's other problems: exit 2, nothing paid.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .api.client import PredictionsClient, nested_deeper
from .api.errors import clean_text, json_or_none
from .backends import BACKENDS, default_backend
from .catalog import Catalog, ModelSpec
from .errors import KkiaiError, PipelineError, Problem, UsageError
from .modelschema import SchemaError, parse_ref, spec_from_openapi
from .pipeline import Pipeline
from .rundir import write_json_atomic
from .settings import Settings

log = logging.getLogger(__name__)

FOLDER = "schemas"
FORMAT = 1
MAX_BYTES = 2 * 1024 * 1024  # a schema document, fetched or cached
MAX_DEPTH = 32  # its nesting of objects and lists
FETCH_SECONDS = 30.0  # connect + read, per fetch
SANDBOX = "sandbox"  # the emulator's identity (backends.py): its schemas are not kept

_T = TypeVar("_T")


class FetchError(Exception):
    """Why a schema could not be had: the end of a sentence ``cannot get the schema of X: ...``."""


@dataclass(frozen=True)
class Wanted:
    """One model to fetch, from one service, for the steps that name it there."""

    owner: str
    name: str
    version: str
    backend: str
    identity: str
    steps: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}:{self.version}"


def with_fetched_models(
    pipeline: Pipeline,
    settings: Settings,
    catalog: Catalog,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[Catalog, list[Problem]]:
    """``catalog`` plus the fetched (or cached) schemas of the pipeline's models outside it, and a
    problem (field ``model``) for each step whose model's schema cannot be had."""
    wanted = models_wanted(pipeline, settings, catalog)
    if not wanted:
        return catalog, []
    cache = SchemaCache(settings.cache_dir) if settings.cache_dir is not None else None
    found = blocking(lambda: _fetch_all(wanted, settings, cache, transport))
    problems = [
        Problem(
            f"cannot get the schema of {want.ref}: {outcome}", file=pipeline.source, step=step, field="model"
        )
        for want, outcome in zip(wanted, found, strict=True)
        if isinstance(outcome, FetchError)
        for step in want.steps
    ]
    return catalog.with_fetched(m for m in found if isinstance(m, ModelSpec)), problems


def together(unfetched: list[Problem], error: PipelineError | None, *, pipeline: Pipeline) -> PipelineError:
    """One error with the schema problems and the plan's others (its "unknown model" for those steps,
    which only repeats them, left out)."""
    steps = {p.step for p in unfetched}
    rest = [p for p in (error.problems if error else ()) if not (p.step in steps and p.field == "model")]
    return PipelineError([*unfetched, *rest], pipeline=pipeline.name)


def fetch_model(
    ref: str, settings: Settings, *, backend: str, transport: httpx.AsyncBaseTransport | None = None
) -> ModelSpec:
    """The model ``owner/name:<version>`` as ``backend`` describes it (cached like a plan's); raises
    UsageError saying why it cannot be had. For ``kkiai-models``."""
    parts = parse_ref(ref)
    if parts is None:
        raise UsageError(f"'{ref}' is not owner/name:<version>")
    identity = BACKENDS[backend].identity(settings, settings.api.base_url or "", ref)
    want = Wanted(*parts, backend=backend, identity=identity, steps=())
    cache = SchemaCache(settings.cache_dir) if settings.cache_dir is not None else None
    [found] = blocking(lambda: _fetch_all([want], settings, cache, transport))
    if isinstance(found, FetchError):
        raise UsageError(f"cannot get the schema of {ref}: {found}")
    return found


def models_wanted(pipeline: Pipeline, settings: Settings, catalog: Catalog) -> list[Wanted]:
    """The models outside ``catalog`` the pipeline's steps name, one entry per (service, model)."""
    steps: dict[tuple[str, str, str], list[str]] = {}
    for step in pipeline.steps.values():
        if (
            catalog.find(step.model) is not None
            or catalog.curated(step.model)
            or parse_ref(step.model) is None
        ):
            continue  # the catalog answers (or says what is wrong)
        backend = step.backend or default_backend(settings)
        if backend not in BACKENDS:
            continue  # the pipeline's own check reports it
        identity = BACKENDS[backend].identity(settings, settings.api.base_url or "", step.model)
        steps.setdefault((step.model, backend, identity), []).append(step.id)
    wanted = []
    for (ref, backend, identity), ids in steps.items():
        owner, name, version = parse_ref(ref) or ("", "", "")
        wanted.append(Wanted(owner, name, version, backend, identity, tuple(ids)))
    return wanted


async def _fetch_all(
    wanted: list[Wanted],
    settings: Settings,
    cache: SchemaCache | None,
    transport: httpx.AsyncBaseTransport | None,
) -> list[ModelSpec | FetchError]:
    async def one(want: Wanted) -> ModelSpec | FetchError:
        kept = cache if want.identity != SANDBOX else None  # asked in-process: it follows the emulator
        cached = kept.read(want) if kept is not None else None
        if cached is not None:
            return cached
        try:
            document = await fetch_document(want, settings, transport=transport)
            model = spec_from_openapi(want.owner, want.name, want.version, document)
        except SchemaError as exc:
            return FetchError(f"its schema cannot be used ({exc})")
        except FetchError as exc:
            return exc
        if kept is not None:
            kept.write(want, document)
        return model

    return list(await asyncio.gather(*(one(w) for w in wanted)))


async def fetch_document(
    want: Wanted, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Any:
    """The OpenAPI document of ``want`` from its service; raises FetchError."""
    if want.backend == "cog":
        return await _from_cog(want, settings, transport)
    if settings.api.kind == "sandbox":
        from .sandbox.generic import generic_model  # only sandbox plans pay for importing the emulator
        from .sandbox.openapi import openapi_schema

        model = generic_model(want.ref, Catalog({}))
        assert model is not None  # want.ref parsed as owner/name:<version>
        return openapi_schema(model)
    return await _from_api(want, settings, transport)


async def _from_api(want: Wanted, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> Any:
    api = settings.api
    if not BACKENDS["api"].available(settings):
        raise FetchError("it asks for the hosted API, but api=cog has none")
    if not api.token:
        raise FetchError(f"{api.token_env} is not set, and the API answers only with a token")
    # Opened as the run opens it: the same options and rate limits (the GET is one "other" call).
    client = BACKENDS["api"].open(settings, api.base_url or "", transport)
    assert isinstance(client, PredictionsClient)
    try:
        body = await client.model_version(want.owner, want.name, want.version)
    except KkiaiError as exc:
        raise FetchError(str(exc)) from exc
    finally:
        await client.aclose()
    if not isinstance(body.get("openapi_schema"), Mapping):
        raise FetchError("the API's answer has no openapi_schema")
    return body["openapi_schema"]


async def _from_cog(want: Wanted, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> Any:
    model = f"{want.owner}/{want.name}"
    server = settings.cog.servers.get(model)
    if not server:
        raise FetchError(
            f"it runs on Cog but no server is set for {model}: 'cog.servers={{{model}:http://...}}'"
        )
    options = settings.cog.options
    timeout = httpx.Timeout(FETCH_SECONDS, connect=options.connect_timeout)
    deadline = time.monotonic() + options.ready_timeout
    try:
        # trust_env=False: a proxy meant for the internet must not stand between us and our own servers.
        async with httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False) as http:
            while True:
                get = _capped_get(http, f"{server.rstrip('/')}/openapi.json")
                body, status = await asyncio.wait_for(get, FETCH_SECONDS)
                if status != 503:  # 503: the server has no schema until its setup is done
                    break
                await _wait_for_setup(http, server, deadline, options.ready_timeout, options.health_interval)
    except (httpx.HTTPError, asyncio.TimeoutError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise FetchError(f"the Cog server at {server} cannot be reached ({clean_text(reason)})") from exc
    if status != 200:
        raise FetchError(f"the Cog server at {server} answered {status} to GET /openapi.json")
    return parse_document(body, f"the Cog server at {server}")


async def _wait_for_setup(
    http: httpx.AsyncClient, server: str, deadline: float, patience: float, interval: float
) -> None:
    """Pause while the server sets up (STARTING); raises FetchError when it failed or took too long."""
    response = await http.get(f"{server.rstrip('/')}/health-check")
    body = json_or_none(response)
    status = body.get("status") if isinstance(body, dict) else None
    if status != "STARTING":
        shown = clean_text(str(status), limit=30) if status else f"answered {response.status_code}"
        raise FetchError(f"the Cog server at {server} has no schema to give (its health-check: {shown})")
    if time.monotonic() > deadline:
        raise FetchError(f"the Cog server at {server} did not finish its setup within {patience:g} s")
    log.info("waiting for the Cog server at %s to finish its setup", server)
    await asyncio.sleep(max(interval, 0.05))


async def _capped_get(http: httpx.AsyncClient, url: str) -> tuple[bytes, int]:
    chunks, size = [], 0
    async with http.stream("GET", url) as response:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                break
        return b"".join(chunks), response.status_code


def parse_document(body: bytes, source: str) -> Any:
    """JSON ``body`` (a schema document), refused when too large or nested too deep; raises FetchError."""
    if len(body) > MAX_BYTES:
        raise FetchError(f"{source} sent a schema larger than {MAX_BYTES} bytes")
    if nested_deeper(body, MAX_DEPTH):
        raise FetchError(f"{source} sent a schema nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{source} sent a schema that is not JSON") from exc


class SchemaCache:
    """``<root>/schemas/<key>.json``: one fetched schema per (service identity, model version)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / FOLDER

    def path(self, want: Wanted) -> Path:
        digest = hashlib.sha256(f"{want.identity}\n{want.ref}".encode()).hexdigest()
        return self.folder / f"{digest[:40]}.json"

    def read(self, want: Wanted) -> ModelSpec | None:
        """The cached model, or None when there is none or it cannot be trusted (said in the log)."""
        path = self.path(want)
        try:
            with path.open("rb") as handle:
                body = handle.read(MAX_BYTES + 1)
        except OSError:
            return None
        try:
            data = parse_document(body, f"the cached schema {path}")
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise SchemaError("it is not a cached schema of this format")
            if data.get("identity") != want.identity or data.get("model") != want.ref:
                raise SchemaError("it is the schema of another model or service")
            return spec_from_openapi(want.owner, want.name, want.version, data.get("openapi_schema"))
        except (FetchError, SchemaError) as exc:
            log.warning("ignoring the cached schema %s: %s; fetching it again", path, exc)
            return None

    def write(self, want: Wanted, document: Any) -> None:
        """Keep ``document`` (its components only); a cache that cannot be written costs a fetch later."""
        components = document.get("components") if isinstance(document, Mapping) else None
        data = {
            "format": FORMAT,
            "identity": want.identity,
            "model": want.ref,
            "fetched_at": datetime.now(timezone.utc).isoformat(),
            "openapi_schema": {"components": components},
        }
        try:
            write_json_atomic(self.path(want), data, indent=None)
        except OSError as exc:
            log.warning("could not keep the schema of %s in %s: %s", want.ref, self.folder, exc)


def blocking(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine ``make()`` to its end, here or, when this thread runs an event loop (a
    notebook, the Python API inside async code), on a worker thread with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kkiai-schemas") as worker:
        return worker.submit(lambda: asyncio.run(make())).result()
