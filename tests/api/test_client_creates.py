"""Creates cost money: retried only when nothing can have been created; Cancel-After."""

from __future__ import annotations

import json

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions, cancel_after_header
from kkiai_pipeline.errors import (
    AmbiguousCreateError,
    ApiError,
    ConfigError,
    TransportError,
    ValidationFailed,
)

from .helpers import VERSION, FakeTime, call, make_client, prediction, run

AMBIGUOUS_TAIL = (
    ": a prediction may have been created and may be billed. It was not retried, so as not to pay "
    "twice: check the account's predictions list before running this step again (or set "
    "api.retry_ambiguous_creates=true to retry such failures)"
)


class FakeServer:
    """Plays a script of faults, one per create; counts the bodies it received and what it created.

    ``connect`` fails before the request is sent; ``429`` is received and refused; ``read-timeout``
    and ``drop`` create the prediction and then lose the answer; ``502`` is an edge that answers 502
    after the origin created it; ``ok`` creates and answers 201.
    """

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.received = 0
        self.created: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.script.pop(0) if self.script else "ok"
        if step == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        self.received += 1
        json.loads(request.content)
        if step == "429":
            return httpx.Response(429, json={"detail": "throttled", "status": 429, "retry_after": 2})
        if step in ("401", "402", "404", "422"):
            return httpx.Response(int(step), json={"detail": "no", "status": int(step)})
        self.created.append(f"p{len(self.created) + 1}")
        if step == "read-timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if step == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if step == "502":
            return httpx.Response(502, text="<html>Bad gateway</html>")
        return httpx.Response(201, json={**prediction("starting"), "id": self.created[-1]})


def test_create_is_retried_after_429_and_refused_connections() -> None:
    server = FakeServer("connect", "429", "connect", "ok")
    time = FakeTime()
    client = make_client(server, time=time)
    created = run(client, lambda c: c.create(VERSION, {"prompt": "x"}))
    assert server.created == ["p1"]  # exactly one prediction, whatever happened before
    assert created.id == "p1"
    assert server.received == 2
    assert time.sleeps == [0.25, 2.0, 1.0]
    assert client.stats.creates == 4
    assert client.stats.retries == {"ConnectError": 2, "429": 1}
    assert client.stats.ambiguous_creates == 0


@pytest.mark.parametrize(
    ("fault", "reason", "status_code"),
    [
        ("read-timeout", "ReadTimeout", None),
        ("drop", "RemoteProtocolError", None),
        ("502", "the API answered 502 Bad Gateway", 502),
    ],
)
def test_ambiguous_create_is_not_retried(fault: str, reason: str, status_code: int | None) -> None:
    server = FakeServer(fault)
    client = make_client(server)
    with pytest.raises(AmbiguousCreateError) as caught:
        run(client, lambda c: c.create(VERSION, {}))
    assert (
        str(caught.value)
        == f"POST /replicate/v1/predictions failed after the request was sent ({reason})" + AMBIGUOUS_TAIL
    )
    error = caught.value
    assert (error.method, error.path, error.reason, error.status_code) == (
        "POST",
        "/replicate/v1/predictions",
        reason,
        status_code,
    )
    if status_code is None:
        assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert server.created == ["p1"]
    assert server.received == 1
    assert client.stats.ambiguous_creates == 1
    assert client.stats.retries == {}


def test_ambiguous_create_is_retried_when_the_user_opted_in() -> None:
    options = ClientOptions(retry_ambiguous_creates=True, create_rate_per_minute=0, other_rate_per_minute=0)
    server = FakeServer("read-timeout", "502", "ok")
    client = make_client(server, options=options)
    created = run(client, lambda c: c.create(VERSION, {}))
    assert created.id == "p3"
    assert server.created == ["p1", "p2", "p3"]  # the risk the user accepted: possible duplicates
    assert client.stats.ambiguous_creates == 2
    assert client.stats.retries == {"ReadTimeout": 1, "502": 1}


@pytest.mark.parametrize("status", ["401", "402", "404", "422"])
def test_create_is_never_retried_on_client_errors(status: str) -> None:
    server = FakeServer(status)
    with pytest.raises(ApiError) as caught:
        call(server, lambda c: c.create(VERSION, {}))
    assert caught.value.status_code == int(status)
    assert not isinstance(caught.value, ValidationFailed)  # no invalid_fields in this body
    assert server.received == 1
    assert server.created == []


def test_create_gives_up_on_429_after_max_attempts() -> None:
    server = FakeServer("429", "429", "429")
    options = ClientOptions(max_attempts=3, create_rate_per_minute=0, other_rate_per_minute=0)
    with pytest.raises(
        ApiError,
        match=r"^the API answered 429 to POST /replicate/v1/predictions: throttled \(gave up after 3 attempts\)$",
    ):
        call(server, lambda c: c.create(VERSION, {}), options=options)
    assert server.created == []


@pytest.mark.parametrize(
    ("seconds", "header"), [(90, "90s"), (89.2, "90s"), (1800, "1800s"), (5, "5s"), (2, "5s"), (0.1, "5s")]
)
def test_cancel_after_header(seconds: float, header: str) -> None:
    assert cancel_after_header(seconds) == header


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
def test_cancel_after_must_be_a_positive_duration(seconds: float) -> None:
    with pytest.raises(ValueError, match="cancel_after must be a positive number of seconds"):
        cancel_after_header(seconds)


def test_create_sends_cancel_after() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=prediction("starting"))

    call(handler, lambda c: c.create(VERSION, {}, cancel_after=89.5))
    assert seen[0].headers["Cancel-After"] == "90s"
    assert seen[0].headers["Prefer"] == "wait=5"


def test_options_refuse_nonsense() -> None:
    with pytest.raises(ConfigError, match=r"^api\.max_attempts must be at least 1, not 0$"):
        ClientOptions(max_attempts=0)
    with pytest.raises(ConfigError, match=r"^api\.burst must be at least 1, not 0$"):
        ClientOptions(burst=0)


def test_opted_in_retries_that_give_up_still_say_a_prediction_may_exist() -> None:
    options = ClientOptions(
        retry_ambiguous_creates=True, max_attempts=3, create_rate_per_minute=0, other_rate_per_minute=0
    )
    server = FakeServer("read-timeout", "429", "429")
    with pytest.raises(AmbiguousCreateError) as caught:
        call(server, lambda c: c.create(VERSION, {}), options=options)
    assert str(caught.value) == (
        "POST /replicate/v1/predictions failed after the request was sent (ReadTimeout): predictions may "
        "have been created and may be billed; then 3 attempts in all failed. Check the account's "
        "predictions list before running this step again"
    )
    assert caught.value.attempts == 3
    assert isinstance(caught.value.__cause__, ApiError)
    assert caught.value.__cause__.status_code == 429
    assert server.created == ["p1"]


def test_opted_in_timeouts_to_the_end_chain_every_cause() -> None:
    options = ClientOptions(
        retry_ambiguous_creates=True, max_attempts=2, create_rate_per_minute=0, other_rate_per_minute=0
    )
    server = FakeServer("read-timeout", "read-timeout")
    with pytest.raises(AmbiguousCreateError) as caught:
        call(server, lambda c: c.create(VERSION, {}), options=options)
    last = caught.value.__cause__
    assert isinstance(last, TransportError)
    assert str(last) == (
        "POST https://proxy.example/replicate/v1/predictions timed out: ReadTimeout (gave up after 2 attempts)"
    )
    assert isinstance(last.__cause__, httpx.ReadTimeout)
    assert server.created == ["p1", "p2"]
