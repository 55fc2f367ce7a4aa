"""An in-memory :class:`~kkiai_pipeline.api.backend.PredictionBackend` for fast unit tests.

Predictions live in a dict; nothing touches the network. What each create does is decided by
:class:`Behaviour` rules (``backend.when(...)``), so a test can make a prediction:

- finish at once (the default: ``create`` answers it already ``succeeded``, as a ``Prefer: wait`` would);
- run until an :class:`asyncio.Event` is set (``gate``), or until it is canceled;
- fail (``fail="why"``);
- lose its create: ``lose="answer"`` records the prediction and then raises ``AmbiguousCreateError``
  (the answer was lost), ``lose="request"`` raises it without recording anything (the request was);
- hold its create on the wire until an event is set (``hold``, before or after it is recorded);
- stay out of the list for its first ``hidden`` lookups (the list lags behind);
- have its files removed before anyone fetched them (``expired``, with ``files_base``).

``list_error`` makes ``find_created`` raise (a service without a usable list). Everything is counted:
``created[(version, canonical input)]`` are the predictions made (what is billed),
``stats.creates`` every create call received, ``cancels`` and ``gets`` the ids asked for.

Outputs are ``data:`` URIs by default (the Downloader decodes them locally); with ``files_base`` they
are http(s) URLs served by :attr:`transport`, an ``httpx.MockTransport`` to hand to a ``Downloader``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

import httpx

from kkiai_pipeline.api.backend import OnSend, Update
from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import AmbiguousCreateError, ApiError, DeadlineExceeded

Lose = Literal["answer", "request"]
Hold = Literal["before", "after"]
Match = Callable[[str, Mapping[str, Any]], bool]


def canonical(input: Mapping[str, Any]) -> str:
    """An input as one string, to count creates by (version, input)."""
    return json.dumps(input, sort_keys=True, separators=(",", ":"), default=str)


def file_bytes(prediction_id: str, index: int) -> bytes:
    """The content of a prediction's ``index``-th output file: distinct for every prediction, and a PNG
    to anyone who sniffs its type from the magic bytes (as the downloader does)."""
    return b"\x89PNG\r\n\x1a\n" + f"output {index} of {prediction_id}".encode()


@dataclass
class Behaviour:
    """What one create does (see the module docstring)."""

    fail: str | None = None
    gate: asyncio.Event | None = None
    lose: Lose | None = None
    hold: asyncio.Event | None = None
    hold_at: Hold = "before"  # hold the create before the prediction is recorded, or after
    hidden: int = 0  # lookups that do not see the prediction yet
    refuse: ApiError | None = None  # the create is answered with this error; nothing is created
    expired: bool = False  # its file URLs answer 404, and ``get`` shows no output (files removed)
    logs: str | None = None  # what its ``logs`` say once it has started


@dataclass
class _Rule:
    match: Match
    behaviour: Behaviour
    times: int  # creates it still applies to; -1: every one


@dataclass
class _Record:
    """One prediction as the service holds it."""

    id: str
    version: str
    input: dict[str, Any]
    created: float  # server clock (epoch seconds)
    behaviour: Behaviour
    status: str = "starting"
    output: Any = None
    error: str | None = None
    completed_at: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def snapshot(self) -> Prediction:
        return Prediction(
            id=self.id,
            status=self.status,
            output=self.output,
            error=self.error,
            logs=self.behaviour.logs if self.status != "starting" else None,
            metrics={"predict_time": 0.01} if self.status == "succeeded" else {},
            created_at=_iso(self.created),
            started_at=_iso(self.created),
            completed_at=self.completed_at,
        )

    @property
    def terminal(self) -> bool:
        return self.snapshot().terminal

    def end(self, status: str, *, output: Any = None, error: str | None = None) -> None:
        self.status, self.output, self.error = status, output, error
        self.completed_at = _iso(time.time())
        self.changed.set()


@dataclass
class MemoryStats:
    """The counters of the :class:`~kkiai_pipeline.api.backend.BackendStats` protocol."""

    requests: int = 0
    creates: int = 0


class MemoryBackend:
    """Predictions in a dict; see the module docstring. Use it from one event loop."""

    def __init__(self, *, reattach: bool = True, lookup: bool = True, files_base: str | None = None) -> None:
        self.reattach = reattach
        self.lookup = lookup
        self.server_offset = 0.0
        self.files_base = files_base.rstrip("/") if files_base else None
        self.predictions: dict[str, _Record] = {}
        self.created: Counter[tuple[str, str]] = Counter()
        self.cancels: list[str] = []
        self.gets: list[str] = []
        self.lookups = 0
        self.list_error: ApiError | None = None
        self.files: dict[str, bytes] = {}  # URL path -> bytes, for files_base outputs
        self.closed = False
        self.holding: set[str] = set()  # creates held on the wire, by canonical input
        self.waiting: Counter[str] = Counter()  # predictions being followed by wait(), by id
        self._stats = MemoryStats()
        self._rules: list[_Rule] = []

    # -- scripting --------------------------------------------------------------------------------

    def when(self, behaviour: Behaviour, *, match: Match | None = None, times: int = 1) -> None:
        """Let the next ``times`` creates that ``match`` (version, input) behave so (-1: all of them)."""
        self._rules.append(_Rule(match or (lambda _v, _i: True), behaviour, times))

    def when_input(self, behaviour: Behaviour, *, times: int = 1, **values: Any) -> None:
        """:meth:`when` for creates whose input has these ``values``."""

        def match(_version: str, input: Mapping[str, Any]) -> bool:
            return all(input.get(k) == v for k, v in values.items())

        self.when(behaviour, match=match, times=times)

    def add(
        self,
        version: str,
        input: Mapping[str, Any],
        *,
        gate: asyncio.Event | None = None,
        fail: str | None = None,
    ) -> Prediction:
        """A prediction another process created (counted in :attr:`created`, not in ``stats``)."""
        record = self._record(version, input, Behaviour(fail=fail, gate=gate))
        self.created[(version, canonical(input))] += 1
        self._advance(record)
        return record.snapshot()

    def expire(self, prediction_id: str) -> None:
        """The service removes the prediction's files, as Replicate does an hour after it ends."""
        record = self.predictions[prediction_id]
        record.output = None
        prefix = f"/{prediction_id}/"
        for path in [p for p in self.files if p.startswith(prefix)]:
            del self.files[path]

    def creates_of(self, version: str, input: Mapping[str, Any]) -> int:
        """Predictions made for exactly (version, input)."""
        return self.created[(version, canonical(input))]

    @property
    def made(self) -> int:
        """Predictions made in all (creates that reached the service)."""
        return sum(self.created.values())

    def status_of(self, prediction_id: str) -> str:
        record = self.predictions[prediction_id]
        self._advance(record)
        return record.status

    @property
    def transport(self) -> httpx.MockTransport:
        """Serves the output files of ``files_base`` URLs (404 once expired)."""

        def handle(request: httpx.Request) -> httpx.Response:
            body = self.files.get(request.url.path)
            if body is None:
                return httpx.Response(404, text="gone")
            return httpx.Response(200, content=body, headers={"content-type": "image/png"})

        return httpx.MockTransport(handle)

    # -- the protocol -----------------------------------------------------------------------------

    @property
    def stats(self) -> MemoryStats:
        return self._stats

    async def create(
        self,
        version: str,
        input: Mapping[str, Any],
        *,
        cancel_after: float | None = None,
        on_send: OnSend | None = None,
    ) -> Prediction:
        behaviour = self._behaviour(version, input)
        if on_send is not None:
            await on_send()
        self._stats.requests += 1
        self._stats.creates += 1
        if behaviour.refuse is not None:
            raise behaviour.refuse
        if behaviour.hold is not None and behaviour.hold_at == "before":
            await self._hold(behaviour.hold, input)
        if behaviour.lose == "request":
            raise AmbiguousCreateError(method="POST", path="/v1/predictions", reason="ReadTimeout")
        record = self._record(version, input, behaviour)
        self.created[(version, canonical(input))] += 1
        if behaviour.hold is not None and behaviour.hold_at == "after":
            await self._hold(behaviour.hold, input)
        if behaviour.lose == "answer":
            raise AmbiguousCreateError(method="POST", path="/v1/predictions", reason="ReadTimeout")
        self._advance(record)
        return record.snapshot()

    async def wait(
        self,
        prediction: Prediction,
        *,
        on_update: Update | None = None,
        deadline: float | None = None,
    ) -> Prediction:
        assert prediction.id is not None
        record = self.predictions[prediction.id]
        self.waiting[record.id] += 1
        try:
            return await self._wait(record, prediction.status, on_update, deadline)
        finally:
            self.waiting[record.id] -= 1

    async def _wait(
        self, record: _Record, seen: str, on_update: Update | None, deadline: float | None
    ) -> Prediction:
        while True:
            self._stats.requests += 1
            self._advance(record)
            if record.status != seen and on_update is not None:
                await on_update(record.snapshot())
            seen = record.status
            if record.terminal:
                return record.snapshot()
            record.changed.clear()
            waits = [asyncio.ensure_future(record.changed.wait())]
            if record.behaviour.gate is not None:
                waits.append(asyncio.ensure_future(record.behaviour.gate.wait()))
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
            if not done:
                raise DeadlineExceeded(
                    f"prediction {record.id} was not finished by its deadline", prediction=record.snapshot()
                )

    async def cancel(self, prediction_id: str) -> Prediction:
        self._stats.requests += 1
        self.cancels.append(prediction_id)
        record = self._known(prediction_id)
        self._advance(record)
        if not record.terminal:
            record.end("canceled")
        return record.snapshot()

    async def get(self, prediction_id: str) -> Prediction:
        self._stats.requests += 1
        self.gets.append(prediction_id)
        record = self._known(prediction_id)
        self._advance(record)
        if record.behaviour.expired:
            return replace(record.snapshot(), output=None)
        return record.snapshot()

    async def find_created(
        self, version: str, input: Mapping[str, Any], *, since: datetime
    ) -> Prediction | None:
        self._stats.requests += 1
        self.lookups += 1
        if self.list_error is not None:
            raise self.list_error
        wanted = canonical(input)
        for record in sorted(self.predictions.values(), key=lambda r: r.created, reverse=True):
            if record.version != version or canonical(record.input) != wanted:
                continue
            if record.created < since.timestamp():
                continue
            if record.behaviour.hidden > 0:
                record.behaviour.hidden -= 1
                continue
            self._advance(record)
            return record.snapshot()
        return None

    async def aclose(self) -> None:
        self.closed = True

    # -- inside -----------------------------------------------------------------------------------

    def _behaviour(self, version: str, input: Mapping[str, Any]) -> Behaviour:
        for rule in self._rules:
            if rule.times != 0 and rule.match(version, input):
                if rule.times > 0:
                    rule.times -= 1
                return replace(rule.behaviour)  # a copy: ``hidden`` counts down per prediction
        return Behaviour()

    async def _hold(self, event: asyncio.Event, input: Mapping[str, Any]) -> None:
        key = canonical(input)
        self.holding.add(key)
        try:
            await event.wait()
        finally:
            self.holding.discard(key)

    def _record(self, version: str, input: Mapping[str, Any], behaviour: Behaviour) -> _Record:
        record = _Record(f"p{len(self.predictions) + 1}", version, dict(input), time.time(), behaviour)
        self.predictions[record.id] = record
        return record

    def _advance(self, record: _Record) -> None:
        """A running prediction ends as soon as nothing holds it (no gate, or its gate is set)."""
        if record.terminal:
            return
        gate = record.behaviour.gate
        if gate is not None and not gate.is_set():
            if record.status == "starting":
                record.status = "processing"
            return
        if record.behaviour.fail is not None:
            record.end("failed", error=record.behaviour.fail)
        else:
            record.end("succeeded", output=self._output(record))

    def _output(self, record: _Record) -> Any:
        count = record.input.get("num_outputs", 1)
        urls = [self._file(record.id, i) for i in range(count if isinstance(count, int) else 1)]
        model = default_catalog().find(record.version)
        return urls[0] if model is not None and model.output_kind == "single" else urls

    def _file(self, prediction_id: str, index: int) -> str:
        data = file_bytes(prediction_id, index)
        if self.files_base is None:
            return f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}"
        path = f"/{prediction_id}/{index}.png"
        if not self.predictions[prediction_id].behaviour.expired:
            self.files[path] = data
        return f"{self.files_base}{path}"

    def _known(self, prediction_id: str) -> _Record:
        record = self.predictions.get(prediction_id)
        if record is None:
            raise ApiError(
                f"the API answered 404 to GET /v1/predictions/{prediction_id}: Not found",
                status_code=404,
            )
        return record


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (a stuck test fails after 5 s)."""
    give_up = time.monotonic() + 5.0
    while not condition():
        assert time.monotonic() < give_up, "the condition never held"
        await asyncio.sleep(0.001)
