"""An independent fake of the Replicate-style predictions API that misbehaves like real servers do.

It shares no code with ``kkiai_pipeline`` (least of all its sandbox), so it cannot share the client's
assumptions. It speaks HTTP/1.1 itself (``asyncio`` streams + ``h11``) on 127.0.0.1 in a background
thread, which gives full control of the wire: an answer can be withheld, cut short or replaced.

Routes: ``POST /v1/predictions`` (``Prefer: wait=N``, ``Cancel-After``), ``GET /v1/predictions/{id}``,
``GET /v1/models/{owner}/{name}/versions/{version}`` (the models of ``Knobs.versions``),
``POST /v1/predictions/{id}/cancel``, ``GET /v1/predictions`` (newest first, ``cursor``,
``created_after``, ``created_before``) and ``GET /files/{id}/{n}.png`` (small deterministic PNGs). Every answer carries a
``Date`` header on the server's (possibly skewed) clock. A prediction is ``starting`` for
``queue_seconds``, ``processing`` for its model's predict time, then ``succeeded`` or ``failed``.

Every misbehaviour is a field of :class:`Knobs`, settable at any time from the test's thread;
the ``creates_*`` ones apply to the next N creates (the prediction is made, the answer is what breaks).
Everything the server saw is counted in :class:`Counters`.

Hostile answers: ``Knobs.rewrite`` maps a route (``create``, ``get``, ``cancel``, ``list``, ``file``) to
a function that sees what was asked (:class:`Ask`: the normal answer's JSON, the model, how many times
the route was asked) and may return an :class:`Answer` to send instead: any status, reason phrase,
headers, a lying ``Content-Length``, any bytes, trickled as slowly as wanted. The request takes effect
first (a create creates). Requests for paths outside the API's and the file host's are counted as
``stray`` (with the token: ``stray_with_auth``) and answered 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import io
import json
import os
import random
import re
import signal
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import h11
from PIL import Image

TOKEN = "test-token"
# The kkiai proxy's table of versions (reference/kkiai-predictions-api.txt), and which models answer one
# file URL rather than a list of them.
MODELS = {
    "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4": "stability-ai/stable-diffusion",
    "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc": "stability-ai/sdxl",
    "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3": "stability-ai/stable-diffusion-inpainting",
    "15a3689ee13b0d2616e98820eca31d4c3abcd36672df6afce5cb6feb1d66087d": "stability-ai/stable-diffusion-img2img",
    "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574": "lucataco/flux-schnell-lora",
    "091495765fa5ef2725a175a57b276ec30dc9d39c22d30410f2ede68a3eab66b3": "lucataco/flux-dev-lora",
    "ca1f5e306e5721e19c473e0d094e6603f0456fe759c10715fcd6c1b79242d4a5": "andreasjansson/stable-diffusion-animation",
    "beecf59c4aee8d81bf04f0381033dfa10dc16e845b4ae00d281e2fa377e48a9f": "lucataco/animate-diff",
    "153b0087c2576ad30d8cbddb35275b387d1a6bf986bda5499948f843f6460faf": "sujaykhandekar/object-removal",
    "fb8af171cfa1616ddcf1242c093f9c46bcada5ad4cf6f2fbe8b81b330ec5c003": "cjwbw/rembg",
}
SINGLE_FILE = {"cjwbw/rembg", "sujaykhandekar/object-removal"}
HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
KillWhen = Literal["before", "after"]


def canonical(value: Any) -> str:
    """``value`` as JSON with sorted keys: how inputs are compared (the API echoes them sorted)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rfc3339(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


@dataclass
class KillHook:
    """SIGKILL ``pid`` when request number ``at`` arrives: ``before`` its answer (the request still takes
    effect: a create creates) or right ``after`` the answer was sent."""

    pid: int
    at: int
    when: KillWhen = "before"
    fired: bool = False


@dataclass
class Ask:
    """What a hostile rewrite sees: the route, the request's path, the normal answer's JSON (for a
    file: its prediction's), the prediction's model, and how often the route was asked (1 = first)."""

    route: str
    path: str
    view: dict[str, Any] | None
    model: str | None
    number: int


@dataclass
class Answer:
    """A raw answer sent instead of the normal one; the connection is closed after it.

    ``content_length``: ``"auto"`` is the body's length, None leaves the header out (the body ends when
    the connection closes), a number is sent as it is (a lie, if it differs). ``trickle`` seconds pass
    between chunks of ``chunk`` bytes, from the start of the answer (its status line and headers
    too) or, with ``trickle_body_only``, once the headers are out.
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: bytes = b"OK"
    content_length: int | str | None = "auto"
    trickle: float = 0.0
    chunk: int = 1
    trickle_body_only: bool = True

    def wire(self) -> tuple[bytes, bytes]:
        """(status line and headers, body) as bytes."""
        lines = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        headers = list(self.headers)
        if self.content_type is not None:
            headers.append(("content-type", self.content_type))
        if self.content_length is not None:
            length = len(self.body) if self.content_length == "auto" else self.content_length
            headers.append(("content-length", str(length)))
        headers.append(("connection", "close"))
        lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n", self.body


Rewrite = Callable[[Ask], "Answer | None"]


def json_answer(data: Any, status: int = 200, **options: Any) -> Answer:
    """An Answer whose body is ``data`` as JSON."""
    return Answer(status=status, body=json.dumps(data).encode(), **options)


@dataclass
class Knobs:
    """How the server behaves; every field may be changed while it runs."""

    token: str = TOKEN
    queue_seconds: float = 0.02  # `starting` this long
    predict_seconds: float = 0.2  # then `processing` this long (fixed per prediction at its creation)
    predict_seconds_for: dict[str, float] = field(default_factory=dict)  # owner/name -> seconds
    clock_skew: float = 0.0  # the server's clock minus ours: created_at and Date headers move with it
    list_lag: float = 0.0  # a prediction shows in the list only this long after its creation
    list_status: int = 200  # anything else: the list answers this error (404 = no list at all)
    page_size: int = 100
    creates_500: int = 0  # the next N creates: made, then answered 500
    creates_dropped: int = 0  # ... made, then the connection is closed without an answer
    creates_truncated: int = 0  # ... made, answered 201 with the JSON cut in half
    creates_html: int = 0  # ... made, answered 200 with an HTML page
    creates_without_id: int = 0  # ... made, answered 201 with JSON lacking its id
    fail_marker: str = "[fail]"  # a prediction whose input contains this fails
    fail_next: int = 0  # the next N predictions created fail
    file_failures: int = 0  # the next N file downloads fail (-1: all of them)
    file_failure_status: int = 500
    data_ttl: float | None = None  # this long after completing, output and files are removed
    kill: KillHook | None = None
    rewrite: dict[str, Rewrite] = field(default_factory=dict)  # route -> hostile answers (see Answer)
    # Models outside the table above: version hash -> (owner/name, its OpenAPI schema); list outputs.
    versions: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Counters:
    """What the server saw. ``creates`` counts predictions made (answered or not)."""

    requests: int = 0
    creates: int = 0
    by_input: Counter[tuple[str, str]] = field(default_factory=Counter)  # (version hash, canonical input)
    rejected: int = 0  # 401 and 422 answers: nothing made
    gets: int = 0
    cancels: int = 0
    canceled_ids: list[str] = field(default_factory=list)
    lists: int = 0
    file_gets: int = 0
    file_gets_with_auth: int = 0  # the token must never travel to a file host
    asked: Counter[str] = field(default_factory=Counter)  # by route: create, get, cancel, list, file
    rewritten: int = 0  # hostile answers sent
    stray: int = 0  # requests for paths that are neither the API's nor the file host's
    stray_with_auth: int = 0
    stray_paths: list[str] = field(default_factory=list)
    version_gets: int = 0  # GET /v1/models/{owner}/{name}/versions/{version}, answered or not

    def duplicates(self) -> int:
        """Creates beyond one per distinct (version, input): what a careful client never pays for."""
        return self.creates - len(self.by_input)


@dataclass
class _Prediction:
    seq: int
    id: str
    version: str
    model: str
    input: dict[str, Any]
    created: float  # on the server's clock
    born: float  # time.monotonic() at creation
    queue: float
    predict: float
    fails: bool
    cancel_after: float | None = None
    canceled_at: float | None = None  # monotonic

    def ending(self) -> tuple[str, float]:
        """The terminal status and when (seconds after birth) it is reached."""
        status, at = ("failed" if self.fails else "succeeded"), self.queue + self.predict
        if self.cancel_after is not None and self.cancel_after < at:
            status, at = "canceled", self.cancel_after
        if self.canceled_at is not None and self.canceled_at - self.born < at:
            status, at = "canceled", max(self.canceled_at - self.born, 0.0)
        return status, at

    def status(self, now: float) -> str:
        final, at = self.ending()
        age = now - self.born
        return final if age >= at else "processing" if age >= self.queue else "starting"


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    drop: bool = False  # close the connection instead of answering
    raw: Answer | None = None  # a hostile answer, sent as it is
    fault: bool = False  # a create_* knob broke this answer (no rewrite replaces it)


class FakeApi:
    """The fake server; ``with FakeApi() as fake:`` serves it on ``fake.base_url`` until the block ends."""

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.counters = Counters()
        self.port = 0
        self._predictions: dict[str, _Prediction] = {}
        self._lock = threading.Lock()
        self._random = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def now(self) -> float:
        """The server's clock (epoch seconds)."""
        return time.time() + self.knobs.clock_skew

    def arm_kill(self, pid: int, *, at: int, when: KillWhen = "before") -> KillHook:
        """Kill ``pid`` at the ``at``-th request from now (1 = the next one)."""
        with self._lock:
            self.knobs.kill = KillHook(pid, self.counters.requests + at, when)
            return self.knobs.kill

    def prediction_ids(self) -> list[str]:
        with self._lock:
            return list(self._predictions)

    def __enter__(self) -> FakeApi:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="fake-api")
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stop.wait()
        server.close()
        await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the wire ---------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await self._read(conn, reader)
                if received is None:
                    return
                request, body = received
                with self._lock:
                    self.counters.requests += 1
                    number = self.counters.requests
                reply = await self._handle(request, body)
                hook = self.knobs.kill
                if hook is not None and hook.at == number and hook.when == "before":
                    self._fire(hook)
                    return
                if reply.drop:
                    if hook is not None and hook.at == number:
                        self._fire(hook)
                    return
                if reply.raw is not None:
                    await self._send_raw(writer, reply.raw)
                    return
                await self._send(conn, writer, reply)
                if hook is not None and hook.at == number:
                    self._fire(hook)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read(conn: h11.Connection, reader: asyncio.StreamReader) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, body
            else:  # ConnectionClosed, or PAUSED after the client closed
                return None

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: _Reply) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("date", email.utils.formatdate(self.now(), usegmt=True)),
        ]
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=reply.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    @staticmethod
    async def _send_raw(writer: asyncio.StreamWriter, answer: Answer) -> None:
        head, body = answer.wire()
        if answer.trickle <= 0:
            writer.write(head + body)
            await writer.drain()
            return
        if answer.trickle_body_only:
            writer.write(head)
            await writer.drain()
            rest = body
        else:
            rest = head + body
        for start in range(0, len(rest), max(answer.chunk, 1)):
            writer.write(rest[start : start + max(answer.chunk, 1)])
            await writer.drain()
            await asyncio.sleep(answer.trickle)

    @staticmethod
    def _fire(hook: KillHook) -> None:
        hook.fired = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(hook.pid, signal.SIGKILL)

    # -- routes -----------------------------------------------------------------------------------------

    async def _handle(self, request: h11.Request, body: bytes) -> _Reply:
        route: list[str] = []
        reply = await self._route(request, body, route)
        if not route:
            return reply
        name, path = route[0], request.target.decode("latin-1")
        rewrite = self.knobs.rewrite.get(name)
        with self._lock:
            self.counters.asked[name] += 1
            number = self.counters.asked[name]
        if rewrite is None:
            return reply
        view = self._view_for(name, path, reply)
        prediction = self._predictions.get(str(view.get("id"))) if view else None
        answer = rewrite(Ask(name, path, view, prediction.model if prediction else None, number))
        if answer is None:
            return reply
        with self._lock:
            self.counters.rewritten += 1
        return _Reply(answer.status, raw=answer)

    def _view_for(self, name: str, path: str, reply: _Reply) -> dict[str, Any] | None:
        """The JSON a rewrite sees: the normal answer's, or for a file its prediction's."""
        if name == "file":
            parts = urlsplit(path).path.strip("/").split("/")
            prediction = self._predictions.get(parts[1]) if len(parts) > 1 else None
            return self._view(prediction) if prediction is not None else None
        try:
            data = json.loads(reply.body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def _route(self, request: h11.Request, body: bytes, route: list[str]) -> _Reply:
        """The normal answer; ``route`` gets the route's name when the request is one of the API's."""
        method = request.method.decode()
        url = urlsplit(request.target.decode())
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        parts = url.path.strip("/").split("/")
        if parts[0] == "files" and method == "GET" and len(parts) == 3:
            route.append("file")
            return self._file(parts[1], parts[2], authorized="authorization" in headers)
        if parts[:2] == ["v1", "models"] and method == "GET" and len(parts) == 6 and parts[4] == "versions":
            return self._version(parts[2], parts[3], parts[5], authorized=headers.get("authorization"))
        if parts[0] != "v1" or len(parts) < 2 or parts[1] != "predictions":
            with self._lock:
                self.counters.stray += 1
                self.counters.stray_with_auth += "authorization" in headers
                self.counters.stray_paths.append(url.path)
            return _problem(404, "Not found")
        if headers.get("authorization") != f"Bearer {self.knobs.token}":
            with self._lock:
                self.counters.rejected += 1
            return _problem(401, "You did not pass a valid authentication token", title="Unauthenticated")
        if len(parts) == 2 and method == "POST":
            reply = await self._create(body, headers)
            if reply.status < 400 and not reply.fault:  # made: a hostile answer may replace this one
                route.append("create")
            return reply
        if len(parts) == 2 and method == "GET":
            route.append("list")
            return self._list(parse_qs(url.query))
        prediction = self._predictions.get(parts[2]) if len(parts) > 2 else None
        if prediction is None:
            return _problem(404, "The requested resource could not be found")
        if len(parts) == 3 and method == "GET":
            with self._lock:
                self.counters.gets += 1
            route.append("get")
            return _json(200, self._view(prediction))
        if len(parts) == 4 and parts[3] == "cancel" and method == "POST":
            route.append("cancel")
            return self._cancel(prediction)
        return _problem(404, "Not found")

    async def _create(self, body: bytes, headers: dict[str, str]) -> _Reply:
        try:
            request = json.loads(body)
            version_ref, input = request["version"], request["input"]
            assert isinstance(version_ref, str) and isinstance(input, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            with self._lock:
                self.counters.rejected += 1
            return _problem(422, "- version and input are required\n", title="Input validation failed")
        version = version_ref.rpartition(":")[2]
        if version not in MODELS and version not in self.knobs.versions:
            with self._lock:
                self.counters.rejected += 1
            return _problem(
                422, "The specified version does not exist", title="Invalid version or not permitted"
            )
        prediction = self._make(version, input, headers.get("cancel-after"))
        wait = re.fullmatch(r"wait(?:=(\d+))?", headers.get("prefer", "").strip())
        if wait:
            await self._hold(prediction, float(wait.group(1) or 60))
        fault = self._create_fault()
        reply = self._create_reply(fault, self._view(prediction))
        reply.fault = fault is not None
        return reply

    @staticmethod
    def _create_reply(fault: str | None, view: dict[str, Any]) -> _Reply:
        if fault == "500":
            return _problem(500, "Internal server error")
        if fault == "dropped":
            return _Reply(0, drop=True)
        if fault == "truncated":
            full = json.dumps(view).encode()
            return _Reply(201, full[: len(full) // 2])
        if fault == "html":
            return _Reply(200, HTML_PAGE, content_type="text/html")
        if fault == "without_id":
            del view["id"]
        return _json(201, view)

    def _make(self, version: str, input: dict[str, Any], cancel_after: str | None) -> _Prediction:
        knobs = self.knobs
        model = MODELS[version] if version in MODELS else knobs.versions[version][0]
        with self._lock:
            self.counters.creates += 1
            self.counters.by_input[(version, canonical(input))] += 1
            fails = knobs.fail_marker in canonical(input) or knobs.fail_next > 0
            knobs.fail_next = max(knobs.fail_next - 1, 0)
            prediction = _Prediction(
                seq=self.counters.creates,
                id="".join(self._random.choices(string.ascii_lowercase + string.digits, k=26)),
                version=version,
                model=model,
                input=input,
                created=self.now(),
                born=time.monotonic(),
                queue=knobs.queue_seconds,
                predict=knobs.predict_seconds_for.get(model, knobs.predict_seconds),
                fails=fails,
                cancel_after=_seconds(cancel_after),
            )
            self._predictions[prediction.id] = prediction
        return prediction

    def _create_fault(self) -> str | None:
        with self._lock:
            for name in ("500", "dropped", "truncated", "html", "without_id"):
                attribute = f"creates_{name}"
                if getattr(self.knobs, attribute) > 0:
                    setattr(self.knobs, attribute, getattr(self.knobs, attribute) - 1)
                    return name
        return None

    @staticmethod
    async def _hold(prediction: _Prediction, seconds: float) -> None:
        """``Prefer: wait``: answer once the prediction is terminal or ``seconds`` have passed."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and prediction.status(time.monotonic()) in ("starting", "processing"):
            await asyncio.sleep(0.02)

    def _cancel(self, prediction: _Prediction) -> _Reply:
        with self._lock:
            self.counters.cancels += 1
            self.counters.canceled_ids.append(prediction.id)
            if prediction.status(time.monotonic()) in ("starting", "processing"):
                prediction.canceled_at = time.monotonic()
        return _json(200, self._view(prediction))

    def _list(self, query: dict[str, list[str]]) -> _Reply:
        with self._lock:
            self.counters.lists += 1
        if self.knobs.list_status != 200:
            return _problem(self.knobs.list_status, "Not found")
        now = time.monotonic()
        after = _parse_time(query.get("created_after", [""])[0])
        before = _parse_time(query.get("created_before", [""])[0])
        text = query.get("cursor", ["0"])[0]
        cursor = int(text) if text.isdigit() else 0
        visible = [
            p
            for p in sorted(self._predictions.values(), key=lambda p: -p.seq)
            if now - p.born >= self.knobs.list_lag
            and (after is None or p.created >= after)
            and (before is None or p.created < before)
            and (not cursor or p.seq < cursor)
        ]
        page = visible[: self.knobs.page_size]
        next_url = None
        if len(visible) > len(page):
            params = {k: v[0] for k, v in query.items() if k != "cursor"} | {"cursor": str(page[-1].seq)}
            next_url = f"{self.base_url}/predictions?{urlencode(params)}"
        results = [self._view(p) for p in page]
        return _json(200, {"previous": None, "next": next_url, "results": results})

    def _version(self, owner: str, name: str, version: str, *, authorized: str | None) -> _Reply:
        with self._lock:
            self.counters.version_gets += 1
        if authorized != f"Bearer {self.knobs.token}":
            return _problem(401, "You did not pass a valid authentication token", title="Unauthenticated")
        known = self.knobs.versions.get(version)
        if known is None or known[0] != f"{owner}/{name}":
            return _problem(404, "Not found")
        created = rfc3339(self.now())
        return _json(
            200, {"id": version, "created_at": created, "cog_version": "0.9.4", "openapi_schema": known[1]}
        )

    def _file(self, prediction_id: str, name: str, *, authorized: bool) -> _Reply:
        with self._lock:
            self.counters.file_gets += 1
            self.counters.file_gets_with_auth += authorized
            failures = self.knobs.file_failures
            if failures:
                self.knobs.file_failures = failures - 1 if failures > 0 else failures
                return _problem(self.knobs.file_failure_status, "file host failure")
        prediction = self._predictions.get(prediction_id)
        stem = name.removesuffix(".png")
        output = self._view(prediction)["output"] if prediction is not None else None
        if prediction is None or output is None or not stem.isdigit() or int(stem) >= _count(output):
            return _problem(404, "The requested file does not exist")
        seed = hashlib.sha256(f"{prediction.version}/{canonical(prediction.input)}/{stem}".encode()).digest()
        image = Image.new("RGB", (16, 16), (seed[0], seed[1], seed[2]))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return _Reply(200, buffer.getvalue(), content_type="image/png")

    def _view(self, p: _Prediction) -> dict[str, Any]:
        """The prediction's JSON as of now."""
        now = time.monotonic()
        status, ends = p.ending()
        status = p.status(now)
        done = status in ("succeeded", "failed", "canceled")
        ttl = self.knobs.data_ttl
        removed = done and ttl is not None and now - p.born - ends >= ttl
        output: Any = None
        if status == "succeeded" and not removed:
            count = 1 if p.model in SINGLE_FILE else min(max(int(p.input.get("num_outputs", 1)), 1), 4)
            files = [f"{self.origin}/files/{p.id}/{n}.png" for n in range(count)]
            output = files[0] if p.model in SINGLE_FILE else files
        view: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": p.input,
            "logs": "",
            "output": output,
            "data_removed": removed,
            "error": "E1000: the model failed" if status == "failed" else None,
            "status": status,
            "created_at": rfc3339(p.created),
            "urls": {
                "get": f"{self.base_url}/predictions/{p.id}",
                "cancel": f"{self.base_url}/predictions/{p.id}/cancel",
            },
        }
        if status != "starting":
            view["started_at"] = rfc3339(p.created + min(p.queue, ends))
        if done:
            view["completed_at"] = rfc3339(p.created + ends)
            view["metrics"] = {"predict_time": max(ends - p.queue, 0.0)}
        return view


def _count(output: Any) -> int:
    return 1 if isinstance(output, str) else len(output)


def _seconds(value: str | None) -> float | None:
    """A ``Cancel-After`` duration (``30``, ``30s``, ``2m``) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)?", (value or "").strip())
    if not match:
        return None
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def _parse_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def _json(status: int, data: Any) -> _Reply:
    return _Reply(status, json.dumps(data).encode())


def _problem(status: int, detail: str, *, title: str | None = None) -> _Reply:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if title:
        body["title"] = title
    return _Reply(status, json.dumps(body).encode(), content_type="application/problem+json")
