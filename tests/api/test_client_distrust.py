"""The client distrusts the API's answers: sizes, nesting, trickles, ids, dates and text are bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions, PredictionsClient, nested_deeper
from kkiai_pipeline.api.errors import clean_text, error_from_response
from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.errors import AmbiguousCreateError, ApiError, ConfigError, TransportError

from .helpers import BASE, FAST, VERSION, call, prediction

SMALL = dataclasses.replace(FAST, max_response_bytes=1000)
RUNNING = Prediction(id="p1", status="processing")


class Trickle(httpx.AsyncByteStream):
    """A body that comes one piece every ``pause`` seconds."""

    def __init__(self, body: bytes, pause: float) -> None:
        self.body, self.pause = body, pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(len(self.body)):
            await asyncio.sleep(self.pause)
            yield self.body[i : i + 1]


def test_an_answer_over_max_response_bytes_is_refused_and_the_prediction_canceled() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json=prediction("canceled"))
        return httpx.Response(200, json={**prediction("processing"), "logs": "x" * 5000})

    with pytest.raises(ApiError) as caught:
        call(handler, lambda c: c.wait(RUNNING), options=SMALL)
    assert str(caught.value) == (
        "GET /predictions/p1: its answer is larger than 1000 bytes (api.max_response_bytes)"
    )
    assert seen == ["GET /replicate/v1/predictions/p1", "POST /replicate/v1/predictions/p1/cancel"]


def test_a_create_answer_over_the_cap_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={**prediction("starting"), "logs": "x" * 5000})

    with pytest.raises(AmbiguousCreateError) as caught:
        call(handler, lambda c: c.create(VERSION, {"prompt": "a"}), options=SMALL)
    assert caught.value.reason == "its answer is larger than 1000 bytes (api.max_response_bytes)"


def test_a_compressed_answer_is_capped_as_it_is_decoded() -> None:
    import gzip

    bomb = gzip.compress(b'{"status": "processing", "logs": "' + b"x" * 1_000_000 + b'"}')
    headers = {"content-encoding": "gzip", "content-type": "application/json"}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers=headers)

    with pytest.raises(ApiError, match=r"its answer is larger than 1000 bytes"):
        call(handler, lambda c: c.get("p1"), options=SMALL)


def test_an_answer_nested_10000_deep_is_refused_unparsed() -> None:
    body = b'{"status": "succeeded", "output": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with pytest.raises(ApiError) as caught:
        call(handler, lambda c: c.get("p1"))
    assert str(caught.value) == (
        "GET /predictions/p1: its answer is nested deeper than 24 levels (api.max_output_depth)"
    )


@pytest.mark.parametrize(
    ("body", "limit", "deeper"),
    [
        (b"[[[]]]", 3, False),
        (b"[[[]]]", 2, True),
        (b'{"a": [{"b": "[[[[[[[["}]}', 3, False),  # brackets in strings do not count
        (b'{"a": "\\"[[[[", "b": [[1]]}', 3, False),  # nor do escaped quotes end a string
        (b"[" * 50, 3, True),  # unbalanced
        (b"[1, [2], [3, [4]]]", 3, False),
        (b"[1, [2], [3, [4]]]", 2, True),
    ],
)
def test_nesting_is_measured_without_parsing(body: bytes, limit: int, deeper: bool) -> None:
    assert nested_deeper(body, limit) is deeper


def test_a_trickled_poll_is_a_read_timeout_and_retried() -> None:
    options = dataclasses.replace(FAST, read_timeout=0.05, connect_timeout=0.05, max_attempts=2)
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, stream=Trickle(json.dumps(prediction("processing")).encode(), 0.1))

    with pytest.raises(TransportError) as caught:
        call(handler, lambda c: c.get("p1"), options=options)
    assert str(caught.value) == (
        f"GET {BASE}/predictions/p1 timed out: ReadTimeout (gave up after 2 attempts)"
    )
    assert len(calls) == 2


def test_a_poll_answer_with_a_malformed_id_cancels_and_fails() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json=prediction("canceled"))
        return httpx.Response(200, json={**prediction("processing"), "id": "../../admin"})

    with pytest.raises(ApiError, match=r"its prediction id '../../admin' is malformed"):
        call(handler, lambda c: c.wait(RUNNING))
    assert seen == ["/replicate/v1/predictions/p1", "/replicate/v1/predictions/p1/cancel"]


@pytest.mark.parametrize("bad", ["../../admin", "a\nb", "\x1b[31m", "a" * 65, ""])
def test_no_url_is_built_from_a_malformed_id(bad: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"sent {request.url}")

    for go in (lambda c: c.get(bad), lambda c: c.cancel(bad), lambda c: c.wait(Prediction(bad, "starting"))):
        with pytest.raises(ApiError, match=r"^refusing a malformed prediction id '"):
            call(handler, go)


def test_a_list_item_with_a_malformed_id_is_not_followed() -> None:
    item = {**prediction("succeeded"), "id": "../../../admin/", "input": {"prompt": "a"}}
    since = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [item], "next": None})

    with pytest.raises(ApiError) as caught:
        call(handler, lambda c: c.find_created(VERSION, {"prompt": "a"}, since=since))
    assert str(caught.value) == (
        "the API's list shows the lost create's prediction, but its prediction id '../../../admin/' "
        "is malformed: it cannot be followed"
    )


def test_a_malformed_next_url_ends_the_list() -> None:
    since = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [5, {"version": []}], "next": "http://[::1"})

    assert call(handler, lambda c: c.find_created(VERSION, {"prompt": "a"}, since=since)) is None


@pytest.mark.parametrize(
    ("date", "offset"),
    [("Fri, 31 Dec 9999 23:59:59 GMT", 0.0), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
)
def test_a_date_header_far_off_is_not_believed(date: str, offset: float) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=prediction("processing"), headers={"date": date})

    async def go(client: PredictionsClient) -> float:
        await client.get("p1")
        return client.server_offset

    assert call(handler, go) == offset


def test_error_text_is_cleaned_of_escapes_and_line_breaks() -> None:
    evil = "\x1b]0;pwned\x07\x1b[31mboom\x1b[0m\n2024-01-01 INFO forged\u202e\x9b2J"
    body = {"title": evil, "detail": evil, "invalid_fields": [{"field": "prompt", "description": evil}]}
    request = httpx.Request("POST", f"{BASE}/predictions")
    error = error_from_response(httpx.Response(422, json=body, request=request))
    clean = "boom 2024-01-01 INFO forged"
    assert str(error) == (
        f"the API answered 422 to POST /replicate/v1/predictions: {clean}: {clean} [prompt: {clean} ]"
    )


@pytest.mark.parametrize(
    ("text", "lines", "cleaned"),
    [
        ("plain", False, "plain"),
        ("a\x1b[1;31mb\x1b[0mc", False, "abc"),
        ("t\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", False, "tlink"),
        ("a\r\nb\tc", False, "a  b c"),
        ("a\r\nb\tc", True, "a\nb c"),
        ("\x00\x07\x7f\x85", False, "    "),
        ("right\u202eleft\u2066x\u2069", False, "right left x "),
        ("\x1bP1$r\x1b\\q", False, "q"),
    ],
)
def test_clean_text(text: str, lines: bool, cleaned: str) -> None:
    assert clean_text(text, lines=lines) == cleaned


def test_clean_text_is_bounded() -> None:
    assert clean_text("x" * 10_000, limit=10) == "x" * 9 + "…"


def test_the_caps_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"^api.max_output_files must be at least 1, not 0$"):
        ClientOptions(max_output_files=0)
    with pytest.raises(ConfigError, match=r"^api.download_timeout must be > 0, not 0$"):
        ClientOptions(download_timeout=0)
