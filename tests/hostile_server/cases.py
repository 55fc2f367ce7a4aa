"""The hostile server corpus: one :class:`Case` per way an API (or its file host) can answer badly.

Each case sets knobs of the fake API (``tests/fakes/fake_api.py``), mostly ``rewrite`` hooks that
replace one route's answers, then runs the ``relay`` pipeline (shot -> cut -> again) with the real
``kkiai-run``. What every case must show is checked in ``test_hostile_server.py``; a case adds what
it expects of the steps: their statuses and a piece of the error of the step the behaviour hits.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..fakes.fake_api import Answer, Ask, FakeApi, Rewrite, json_answer

SDXL = "stability-ai/sdxl"
REMBG = "cjwbw/rembg"
OK = {"shot": "succeeded", "cut": "succeeded", "again": "succeeded"}
SHOT_FAILED = {"shot": "failed", "cut": "skipped", "again": "skipped"}
SHOT_CANCELED = {"shot": "canceled", "cut": "skipped", "again": "skipped"}
SHOT_UNRESOLVED = {"shot": "unresolved", "cut": "skipped", "again": "skipped"}
CUT_FAILED = {"shot": "succeeded", "cut": "failed", "again": "skipped"}
# An OSC window title, a colour, a screen clear, and a newline that would start a forged log line.
EVIL = "\x1b]0;pwned\x07\x1b[31mboom\x1b[0m\x1b[2J\n2024-01-01 00:00:00,000 INFO forged: all good\r"
FORGED = "INFO forged"


def _image(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=kind)
    return buffer.getvalue()


PNG = _image("PNG")
WEBP = _image("WEBP")


@dataclass(frozen=True)
class Case:
    """One hostile behaviour and what the run must then show."""

    id: str
    what: str
    rewrite: Callable[[FakeApi], Mapping[str, Rewrite]] = lambda fake: {}
    setup: Callable[[FakeApi], None] | None = None  # other knobs
    args: tuple[str, ...] = ()  # extra kkiai-run arguments
    wait: int = 0  # api.wait_seconds
    statuses: Mapping[str, str] = field(default_factory=lambda: dict(OK))
    error: str | None = None  # in the error of the first step that did not succeed
    canceled: bool = False  # the run asked the fake to cancel the shot
    types: Mapping[str, str] = field(default_factory=dict)  # step -> content type of its first file


# -- rewrite builders -----------------------------------------------------------------------------


def shot(make: Callable[[Ask], Answer | None]) -> Rewrite:
    """``make``, for the shot's prediction only."""
    return lambda ask: make(ask) if ask.model == SDXL else None


def succeeded_output(
    model: str, value: Callable[[FakeApi, Mapping[str, Any]], Any]
) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    """Polls of ``model``'s succeeded prediction answer with ``value(fake, view)`` as its output."""

    def rewrites(fake: FakeApi) -> Mapping[str, Rewrite]:
        def rewrite(ask: Ask) -> Answer | None:
            if ask.model != model or ask.view is None or ask.view.get("status") != "succeeded":
                return None
            return json_answer({**ask.view, "output": value(fake, ask.view)})

        return {"get": rewrite}

    return rewrites


def shot_output(
    value: Callable[[FakeApi, Mapping[str, Any]], Any],
) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    return succeeded_output(SDXL, value)


def first_file(view: Mapping[str, Any]) -> str:
    output = view["output"]
    return str(output[0] if isinstance(output, list) else output)


def shot_polls(
    body: Callable[[Mapping[str, Any]], bytes], **answer: Any
) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    """Every poll of the shot (from its first) answers ``body(view)`` as it is."""
    return lambda fake: {"get": shot(lambda ask: Answer(body=body(ask.view or {}), **answer))}


def shot_view(**changes: Any) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    """Every poll of the shot answers its JSON with ``changes`` made."""
    return lambda fake: {"get": shot(lambda ask: json_answer({**(ask.view or {}), **changes}))}


def shot_files(make: Callable[[Ask], Answer | None]) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    return lambda fake: {"file": shot(make)}


def created_id(value: Any, *, list_too: bool = False) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    """The shot's create answer carries id ``value`` (and so do the list's items, if ``list_too``)."""

    def rewrites(fake: FakeApi) -> Mapping[str, Rewrite]:
        found: dict[str, Rewrite] = {
            "create": shot(lambda ask: json_answer({**(ask.view or {}), "id": value}, 201))
        }
        if list_too:
            found["list"] = lambda ask: json_answer(
                {**(ask.view or {}), "results": [{**r, "id": value} for r in (ask.view or {})["results"]]}
            )
        return found

    return rewrites


def failed_with(error: Any, **more: Any) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    """The shot ends failed, its error (and ``more`` fields) as given."""

    def answer(ask: Ask) -> Answer | None:
        view = ask.view or {}
        if view.get("status") not in ("succeeded", "failed"):
            return None
        return json_answer({**view, "status": "failed", "output": None, "error": error, **more})

    return lambda fake: {"get": shot(answer)}


def deep(levels: int, leaf: str = "") -> Any:
    value: Any = leaf
    for _ in range(levels):
        value = [value]
    return value


def padded(view: Mapping[str, Any], size: int) -> bytes:
    return json.dumps({**view, "padding": "x" * size}).encode()


def every_route(make: Callable[[Ask, int], Answer]) -> Callable[[FakeApi], Mapping[str, Rewrite]]:
    """Every API answer (create 201, others 200) rebuilt by ``make(ask, status)``."""

    def rewrite(status: int) -> Rewrite:
        return lambda ask: make(ask, status) if ask.view is not None else None

    return lambda fake: {
        "create": rewrite(201),
        "get": rewrite(200),
        "list": rewrite(200),
        "cancel": rewrite(200),
    }


def problem(status: int, detail: str, **more: Any) -> Answer:
    return json_answer(
        {"detail": detail, "status": status, **more}, status, content_type="application/problem+json"
    )


def drop_first_create(fake: FakeApi) -> None:
    fake.knobs.creates_dropped = 1


def slow_shot(fake: FakeApi) -> None:
    """The shot runs a minute: only a cancel ends it within the step's timeout."""
    fake.knobs.predict_seconds_for[SDXL] = 60.0


GZIP_BOMB = gzip.compress(b"{" + b" " * 50_000_000 + b"}", compresslevel=9)


def redirect(location: str) -> Answer:
    return Answer(status=302, reason=b"Found", headers=[("location", location)], content_type=None)


def _redirect_once(ask: Ask) -> Answer | None:
    return None if "hop" in ask.path else redirect(ask.path + "?hop=1")


def _loop(ask: Ask) -> Answer | None:
    return redirect(ask.path)


def _list_loop(ask: Ask) -> Answer:
    page: dict[str, Any] = {
        "previous": None,
        "next": "http://127.0.0.1:9/v1/predictions?cursor=999999",
        "results": [],
    }
    return json_answer(page)


CASES: list[Case] = [
    # -- prediction ids -------------------------------------------------------------------------------
    Case(
        "id-traversal-in-create",
        "the create answers an id of '../../../admin/x'; the list shows the real one",
        created_id("../../../admin/x"),
    ),
    Case(
        "id-traversal-in-create-and-list",
        "the create and the list both show an id of '../../../admin/x'",
        created_id("../../../admin/x", list_too=True),
        statuses=SHOT_UNRESOLVED,
        error="prediction id '../../../admin/x' is malformed: it cannot be followed",
    ),
    Case("id-newline-in-create", "the create's id holds a newline", created_id("abc\nINFO forged")),
    Case("id-escape-in-create", "the create's id holds an ANSI escape", created_id("\x1b[31mred")),
    Case("id-too-long", "the create's id is 65 characters", created_id("a" * 65)),
    Case("id-not-a-string", "the create's id is a JSON object", created_id({"x": 1})),
    Case(
        "id-traversal-in-poll",
        "polls answer with an id of '../../admin'",
        shot_view(id="../../admin"),
        statuses=SHOT_FAILED,
        error="prediction id '../../admin' is malformed",
        canceled=True,
    ),
    Case(
        "id-newline-in-list",
        "the create's answer is lost and the list shows its prediction with a newline in the id",
        lambda fake: {
            "list": lambda ask: json_answer(
                {**(ask.view or {}), "results": [{**r, "id": "a\nb"} for r in (ask.view or {})["results"]]}
            )
        },
        setup=drop_first_create,
        statuses=SHOT_UNRESOLVED,
        error="is malformed: it cannot be followed",
    ),
    Case(
        "urls-point-at-admin",
        "every answer's 'urls' point at /admin paths (never to be followed)",
        every_route(
            lambda ask, status: json_answer(
                {**(ask.view or {}), "urls": {"get": "/admin/get", "cancel": "../../admin/cancel"}}, status
            )
        ),
    ),
    # -- size and structure of answers --------------------------------------------------------------
    Case(
        "poll-larger-than-cap",
        "a poll answers 1 MB (api.max_response_bytes is 256 kB)",
        shot_polls(lambda view: padded(view, 1_000_000)),
        statuses=SHOT_FAILED,
        error="its answer is larger than 262144 bytes (api.max_response_bytes)",
        canceled=True,
    ),
    Case(
        "create-larger-than-cap",
        "the create answers 1 MB; the list shows the prediction",
        lambda fake: {"create": shot(lambda ask: Answer(status=201, body=padded(ask.view or {}, 1_000_000)))},
    ),
    Case(
        "gzip-bomb-poll",
        "a poll answers 50 kB of gzip that decompresses to 50 MB",
        shot_polls(lambda view: GZIP_BOMB, headers=[("content-encoding", "gzip")]),
        statuses=SHOT_FAILED,
        error="its answer is larger than 262144 bytes",
        canceled=True,
    ),
    Case(
        "output-nested-10000-deep",
        "a poll's output is nested 10,000 lists deep",
        shot_polls(
            lambda view: b'{"status": "processing", "output": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
        ),
        statuses=SHOT_FAILED,
        error="its answer is nested deeper than 24 levels (api.max_output_depth)",
        canceled=True,
    ),
    Case(
        "output-nested-20-deep",
        "the succeeded output is nested 20 lists deep (parsable, over api.max_output_depth=16)",
        shot_output(lambda fake, view: deep(20, first_file(view))),
        statuses=SHOT_FAILED,
        error="the prediction's output nests deeper than 16 levels (api.max_output_depth)",
    ),
    Case(
        "output-100000-urls",
        "the succeeded output holds 100,000 URLs",
        shot_output(lambda fake, view: [first_file(view)] * 100_000),
        args=("api.max_response_bytes=16777216",),
        statuses=SHOT_FAILED,
        error="the prediction's output holds more than 1000 files (api.max_output_files)",
    ),
    Case(
        "poll-invalid-json",
        "a poll answers JSON cut off in the middle",
        shot_polls(lambda view: b'{"id": "abc", "status": "proc'),
        statuses=SHOT_FAILED,
        error="unexpected answer from the API",
        canceled=True,
    ),
    Case(
        "poll-unbalanced-brackets",
        "a poll answers 5,000 opening brackets and no closing ones",
        shot_polls(lambda view: b'{"id": "abc", "output": ' + b"[" * 5000),
        statuses=SHOT_FAILED,
        error="its answer is nested deeper than 24 levels",
        canceled=True,
    ),
    Case(
        "poll-json-array",
        "a poll answers a JSON array",
        shot_polls(lambda view: b"[1, 2, 3]"),
        statuses=SHOT_FAILED,
        error="not a JSON object",
        canceled=True,
    ),
    Case(
        "poll-empty-body",
        "a poll answers 200 with an empty body",
        shot_polls(lambda view: b""),
        statuses=SHOT_FAILED,
        error="unexpected answer from the API",
        canceled=True,
    ),
    Case(
        "poll-without-status",
        "a poll's JSON has no status",
        shot_polls(lambda view: json.dumps({k: v for k, v in view.items() if k != "status"}).encode()),
        statuses=SHOT_FAILED,
        error="the API's answer has no 'status'",
        canceled=True,
    ),
    Case(
        "poll-status-a-number",
        "a poll's status is the number 5",
        shot_view(status=5),
        statuses=SHOT_FAILED,
        error="its status is no string",
        canceled=True,
    ),
    Case(
        "poll-status-unknown",
        "polls say 'SUCCEEDED' forever (no status we know)",
        shot_view(status="SUCCEEDED"),
        setup=slow_shot,
        statuses=SHOT_CANCELED,
        error="canceled after the step's timeout of 8 s",
        canceled=True,
    ),
    Case("metrics-a-string", "a poll's metrics are a string", shot_view(metrics="fast")),
    Case(
        "timestamps-garbage",
        "the timestamps are escapes and impossible dates",
        shot_view(created_at="\x1b[2J", started_at=5, completed_at="9999-99-99T99:99:99Z"),
    ),
    # -- the vendor page's shape and the declared output kinds ---------------------------------------
    Case(
        "vendor-shape-for-single-file-model",
        "the cut's create answers {'created': 1e308, 'data': [{'url': ...}]} (the vendor page's example)",
        lambda fake: {
            "create": lambda ask: (
                json_answer({"created": 1e308, "data": [{"url": first_file(ask.view or {})}]})
                if ask.model == REMBG and (ask.view or {}).get("output")
                else None
            )
        },
        wait=5,
    ),
    Case(
        "vendor-shape-with-junk",
        "the shot's create answers the vendor shape with data [5, {}]",
        lambda fake: {"create": shot(lambda ask: json_answer({"created": 0, "data": [5, {}]}))},
        wait=5,
        statuses=SHOT_FAILED,
        error="the prediction's output holds a int as its file 1",
    ),
    Case(
        "single-file-model-gives-two",
        "the cut (one file) answers a list of two URLs",
        succeeded_output(REMBG, lambda fake, view: [view["output"], view["output"]]),
        statuses=CUT_FAILED,
        error="the prediction's output holds 2 files, but the model gives one",
    ),
    Case(
        "list-model-gives-a-string",
        "the shot (a list model) answers one bare URL",
        shot_output(lambda fake, view: first_file(view)),
    ),
    Case(
        "output-a-dict",
        "the shot answers a dict of URLs (later steps index it as a list)",
        shot_output(lambda fake, view: {"image": first_file(view)}),
        statuses=CUT_FAILED,
        error="steps.shot.output[0]",
    ),
    # -- trickles and timeouts ------------------------------------------------------------------------
    Case(
        "poll-body-trickled",
        "a poll's body comes one byte every 0.25 s",
        shot_polls(lambda view: json.dumps(view).encode(), trickle=0.25),
        setup=slow_shot,
        statuses=SHOT_CANCELED,
        error="canceled after the step's timeout of 8 s",
        canceled=True,
    ),
    Case(
        "poll-headers-trickled",
        "a poll's status line and headers come one byte every 0.25 s",
        shot_polls(lambda view: json.dumps(view).encode(), trickle=0.25, trickle_body_only=False),
        setup=slow_shot,
        statuses=SHOT_CANCELED,
        error="canceled after the step's timeout of 8 s",
        canceled=True,
    ),
    Case(
        "create-trickled",
        "the create's answer comes one byte every 0.25 s; the list shows the prediction",
        lambda fake: {
            "create": shot(lambda ask: Answer(status=201, body=json.dumps(ask.view).encode(), trickle=0.25))
        },
    ),
    Case(
        "file-drip-fed",
        "the shot's file comes one byte every 0.5 s",
        shot_files(lambda ask: Answer(body=PNG, content_type="image/png", trickle=0.5)),
        statuses=SHOT_FAILED,
        error="when the time for the step's downloads ran out",
    ),
    Case(
        "file-lying-length",
        "the shot's file announces 100,000 bytes and sends 70",
        shot_files(lambda ask: Answer(body=PNG, content_type="image/png", content_length=100_000)),
        statuses=SHOT_FAILED,
        error="(gave up after 3 attempts)",
    ),
    Case(
        "file-over-the-limit-unannounced",
        "the shot's file sends 2 MB without a Content-Length (max_download_bytes is 1 MB)",
        shot_files(
            lambda ask: Answer(body=PNG + b"\0" * 2_000_000, content_type="image/png", content_length=None)
        ),
        statuses=SHOT_FAILED,
        error="sent more than the download limit of 1000000 bytes",
    ),
    Case(
        "file-500-forever",
        "the shot's file answers 500 every time",
        shot_files(lambda ask: problem(500, "file host down")),
        statuses=SHOT_FAILED,
        error="answered 500 (gave up after 3 attempts)",
    ),
    Case(
        "file-404",
        "the shot's file answers 404",
        shot_files(lambda ask: problem(404, "gone")),
        statuses=SHOT_FAILED,
        error="answered 404",
    ),
    # -- content types ------------------------------------------------------------------------------
    Case(
        "file-html",
        "the shot's file is an HTML page served as text/html",
        shot_files(
            lambda ask: Answer(body=b"<html><script>alert(1)</script></html>", content_type="text/html")
        ),
        types={"shot": "application/octet-stream"},
    ),
    Case(
        "file-shell-script",
        "the shot's file is a shell script served as application/x-sh",
        shot_files(lambda ask: Answer(body=b"#!/bin/sh\nrm -rf ~\n", content_type="application/x-sh")),
        types={"shot": "application/octet-stream"},
    ),
    Case(
        "file-svg",
        "the shot's file is an SVG with a script",
        shot_files(
            lambda ask: Answer(body=b"<svg><script>alert(1)</script></svg>", content_type="image/svg+xml")
        ),
        types={"shot": "application/octet-stream"},
    ),
    Case(
        "file-webp-as-octet-stream",
        "the shot's file is a WebP served as application/octet-stream",
        shot_files(lambda ask: Answer(body=WEBP, content_type="application/octet-stream")),
        types={"shot": "image/webp"},
    ),
    Case(
        "file-png-as-text",
        "the shot's file is a PNG served as text/plain with a control character in the type",
        shot_files(lambda ask: Answer(body=PNG, content_type="text/plain; x=\x1b[31m")),
        types={"shot": "image/png"},
    ),
    # -- redirects ----------------------------------------------------------------------------------
    Case(
        "file-redirect-to-file-scheme",
        "the shot's file redirects to file:///etc/passwd",
        shot_files(lambda ask: redirect("file:///etc/passwd")),
        statuses=SHOT_FAILED,
        error="its scheme is 'file:'; only http(s) and data: URLs can be fetched",
    ),
    Case(
        "file-redirect-loop",
        "the shot's file redirects to itself forever",
        shot_files(_loop),
        statuses=SHOT_FAILED,
        error="more than 5 redirects",
    ),
    Case(
        "file-redirect-once",
        "the shot's file redirects once, to itself with a query",
        shot_files(_redirect_once),
    ),
    # -- output URLs and schemes --------------------------------------------------------------------
    Case(
        "output-file-scheme",
        "the shot's output is file:///etc/passwd",
        shot_output(lambda fake, view: ["file:///etc/passwd"]),
        statuses=SHOT_FAILED,
        error="holds a 'file:' URL (only http(s) and data: outputs can be fetched) as its file 1",
    ),
    Case(
        "output-ftp-scheme",
        "the shot's output is an ftp: URL",
        shot_output(lambda fake, view: ["ftp://127.0.0.1/x.png"]),
        statuses=SHOT_FAILED,
        error="holds a 'ftp:' URL",
    ),
    Case(
        "output-javascript-scheme",
        "the shot's output is javascript:alert(1)",
        shot_output(lambda fake, view: ["javascript:alert(1)"]),
        statuses=SHOT_FAILED,
        error="holds a 'javascript:' URL",
    ),
    Case(
        "output-plain-text",
        "the shot's output is a word, not a URL",
        shot_output(lambda fake, view: ["hello"]),
        statuses=SHOT_FAILED,
        error="holds 'hello' (not a URL) as its file 1",
    ),
    Case(
        "output-mixed-types",
        "the shot's output is [URL, 5]",
        shot_output(lambda fake, view: [first_file(view), 5]),
        statuses=SHOT_FAILED,
        error="holds a int as its file 2",
    ),
    Case(
        "output-null-when-succeeded",
        "the shot succeeds with output null",
        shot_output(lambda fake, view: None),
        statuses=SHOT_FAILED,
        error="the service removed its files before they were stored",
    ),
    Case(
        "output-empty-list",
        "the shot succeeds with output []",
        shot_output(lambda fake, view: []),
        statuses=SHOT_FAILED,
        error="the service removed its files before they were stored",
    ),
    Case(
        "output-url-with-newline",
        "the shot's URL holds a newline and a forged log line",
        shot_output(lambda fake, view: [first_file(view) + "\n2024-01-01 INFO forged"]),
        statuses=SHOT_FAILED,
        error="the URL holds control characters or spaces",
    ),
    Case(
        "output-url-with-escape",
        "the shot's URL holds an ANSI escape",
        shot_output(lambda fake, view: [first_file(view) + "\x1b[2J"]),
        statuses=SHOT_FAILED,
        error="the URL holds control characters or spaces",
    ),
    Case(
        "output-url-with-space",
        "the shot's URL holds a space",
        shot_output(lambda fake, view: [first_file(view).replace("/files", "/fi les")]),
        statuses=SHOT_FAILED,
        error="the URL holds control characters or spaces",
    ),
    Case(
        "output-data-uri-bad-base64",
        "the shot's output is a data: URI with broken base64",
        shot_output(lambda fake, view: ["data:image/png;base64,!!!!"]),
        statuses=SHOT_FAILED,
        error="malformed base64 in data: URI",
    ),
    Case(
        "output-data-uri-over-cap",
        "the shot's output is a 1 MB data: URI (api.max_response_bytes is 256 kB)",
        shot_output(lambda fake, view: ["data:image/png;base64," + "A" * 1_000_000]),
        statuses=SHOT_FAILED,
        error="its answer is larger than 262144 bytes",
    ),
    Case(
        "output-data-uri-html",
        "the shot's output is data:text/html with a script",
        shot_output(lambda fake, view: ["data:text/html,<script>alert(1)</script>"]),
        types={"shot": "application/octet-stream"},
    ),
    Case(
        "output-on-loopback-refused",
        "the shot's output is on 127.0.0.1 and api.allow_private_outputs=false",
        args=("api.allow_private_outputs=false",),
        statuses=SHOT_FAILED,
        error="its host 127.0.0.1 is a loopback or private address (127.0.0.1), and outputs on such",
    ),
    Case(
        "output-cloud-metadata",
        "the shot's output is the cloud metadata address, private outputs not allowed",
        shot_output(lambda fake, view: ["http://169.254.169.254/latest/meta-data/"]),
        args=("api.allow_private_outputs=false",),
        statuses=SHOT_FAILED,
        error="its host 169.254.169.254 is a loopback or private address",
    ),
    # -- text from the API --------------------------------------------------------------------------
    Case(
        "error-with-escapes",
        "the shot fails with an error of escapes and a forged log line",
        failed_with(EVIL),
        statuses=SHOT_FAILED,
        error="boom",
    ),
    Case(
        "error-with-bidi",
        "the shot fails with an error holding a right-to-left override",
        failed_with("harmless\u202etxt.exe"),
        statuses=SHOT_FAILED,
        error="harmless txt.exe",
    ),
    Case(
        "error-of-100k",
        "the shot fails with an error of 100,000 characters",
        failed_with("E" * 100_000),
        statuses=SHOT_FAILED,
        error="EEEE…",
    ),
    Case(
        "error-not-a-string",
        "the shot fails with an error that is a JSON object holding escapes",
        failed_with({"code": EVIL}),
        statuses=SHOT_FAILED,
        error="boom",
    ),
    Case("logs-with-escapes", "the shot's logs are full of escapes", shot_view(logs=EVIL * 100)),
    Case(
        "create-422-with-escapes",
        "the create is refused 422 with escapes in title, detail and invalid_fields",
        lambda fake: {
            "create": shot(
                lambda ask: problem(
                    422,
                    EVIL,
                    title=EVIL,
                    invalid_fields=[{"field": "prompt", "description": EVIL}],
                )
            )
        },
        statuses=SHOT_FAILED,
        error="the API answered 422 to POST /v1/predictions",
    ),
    Case(
        "poll-500-with-escapes",
        "polls answer 500 with escapes in the detail and the reason phrase",
        lambda fake: {
            "get": shot(
                lambda ask: Answer(
                    status=500, reason=b"Bad \x9b31m Gateway", body=json.dumps({"detail": EVIL}).encode()
                )
            )
        },
        statuses=SHOT_FAILED,
        error="the API answered 500 to GET",
    ),
    Case(
        "retry-after-a-year",
        "the first two polls answer 429 with Retry-After of a year (api.max_wait is 0.2 s)",
        lambda fake: {
            "get": shot(
                lambda ask: (
                    problem(429, "slow down", headers=[("retry-after", "31536000")])
                    if ask.number <= 2
                    else None
                )
            )
        },
    ),
    Case(
        "date-in-year-9999",
        "every answer's Date is in the year 9999, and the first create's answer is lost",
        every_route(
            lambda ask, status: json_answer(
                ask.view, status, headers=[("date", "Fri, 31 Dec 9999 23:59:59 GMT")]
            )
        ),
        setup=drop_first_create,
    ),
    Case(
        "list-results-not-a-list",
        "the create's answer is lost and the list answers results: 'none'",
        lambda fake: {"list": lambda ask: json_answer({"results": "none"})},
        setup=drop_first_create,
        statuses=SHOT_UNRESOLVED,
        error="the API's list of predictions gave no usable answer",
    ),
    Case(
        "list-cursor-loop",
        "the create's answer is lost and the list's pages point at themselves forever",
        lambda fake: {"list": _list_loop},
        setup=drop_first_create,
        statuses=SHOT_UNRESOLVED,
        error="the list of predictions is longer than 50 pages",
    ),
    Case(
        "list-next-malformed",
        "the create's answer is lost; the list's first page holds junk and a malformed next URL",
        lambda fake: {
            "list": lambda ask: (
                json_answer({"next": "http://[::1", "results": [5, {"version": []}]})
                if ask.number == 1
                else None
            )
        },
        setup=drop_first_create,
    ),
    Case(
        "cancel-answers-junk",
        "polls say processing forever, and the cancel answers an id of '../admin'",
        lambda fake: {
            "get": shot(
                lambda ask: json_answer({**(ask.view or {}), "status": "processing", "output": None})
            ),
            "cancel": shot(lambda ask: json_answer({**(ask.view or {}), "id": "../admin"})),
        },
        statuses=SHOT_FAILED,
        error="canceled after the step's timeout of 8 s",
        canceled=True,
    ),
]
