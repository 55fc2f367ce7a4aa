"""Injected faults over loopback HTTP: what the client sees, what the sandbox did, what it counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.sandbox import Sandbox, SandboxConfig, create_app
from kkiai_pipeline.sandbox.drops import ConnectionDropped
from kkiai_pipeline.sandbox.faults import FAILURES

from .helpers import AUTH, TERMINAL, version_of

SD = version_of("stability-ai/stable-diffusion")
SMALL = {"prompt": "a lamp", "width": 64, "height": 64}
PROBLEM = "application/problem+json"
NO_RESPONSE = "Server disconnected without sending a response."
HALF_BODY = "peer closed connection without sending complete message body"

Start = Callable[..., Sandbox]


@contextmanager
def client_of(sandbox: Sandbox, **options: Any) -> Iterator[httpx.Client]:
    settings: dict[str, Any] = {"timeout": 30, **options}
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, **settings) as client:
        yield client


def create(client: httpx.Client, prompt: str = "a lamp", **headers: str) -> httpx.Response:
    return client.post(
        "/predictions", json={"version": SD, "input": {**SMALL, "prompt": prompt}}, headers=headers
    )


def listed(client: httpx.Client) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = client.get("/predictions").json()["results"]
    return results


def wait_listed(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Polls the list (never faulted) until ``count`` predictions are all terminal."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        results = listed(client)
        if len(results) == count and all(r["status"] in TERMINAL for r in results):
            return results
        time.sleep(0.01)
    raise AssertionError("predictions never finished")


def faults(sandbox: Sandbox) -> dict[str, int]:
    return {kind: n for kind, n in sandbox.stats()["faults"].items() if n}


def test_poll_5xx_rotates_statuses_and_leaves_the_prediction_alone(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=60.0, poll_5xx_rate=1.0)
    with client_of(sandbox) as client:
        prediction_id = create(client).json()["id"]
        answers = [client.get(f"/predictions/{prediction_id}") for _ in range(4)]
        cancel = client.post(f"/predictions/{prediction_id}/cancel")
        [still] = listed(client)
    assert [r.status_code for r in answers] == [500, 502, 503, 504]
    assert [r.headers["content-type"] for r in answers] == [PROBLEM, "text/html; charset=utf-8"] * 2
    assert answers[0].json() == {
        "title": "Internal Server Error",
        "detail": "The server had a problem handling the request; try again.",
        "status": 500,
    }
    assert answers[2].json()["status"] == 503
    assert "<title>502 Bad Gateway</title>" in answers[1].text
    assert "<title>504 Gateway Time-out</title>" in answers[3].text
    assert "ratelimit-remaining" in answers[0].headers and "ratelimit-remaining" not in answers[1].headers
    assert cancel.status_code == 500
    assert (still["id"], still["status"]) == (prediction_id, "processing")  # the cancel never happened
    stats = sandbox.stats()
    assert stats["requests"] | {"list": 0} == {
        "create": 1,
        "get": 4,
        "cancel": 1,
        "list": 0,
        "version": 0,
        "file": 0,
        "other": 0,
    }
    assert faults(sandbox) == {"poll_5xx": 5}


def test_create_429_has_the_apis_body_and_creates_nothing(start_sandbox: Start) -> None:
    sandbox = start_sandbox(create_429_rate=1.0, retry_after_seconds=7)
    with client_of(sandbox) as client:
        first, second = create(client), create(client)
        assert listed(client) == []
    for response in (first, second):
        assert response.status_code == 429
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == {
            "detail": "Request was throttled. Your rate limit resets in ~7s.",
            "status": 429,
            "retry_after": 7,
        }
        assert (response.headers["ratelimit-remaining"], response.headers["ratelimit-reset"]) == ("0", "7")
    assert first.headers["retry-after"] == "7"
    assert "retry-after" not in second.headers
    stats = sandbox.stats()
    assert (stats["requests"]["create"], stats["predictions"]["total"]) == (2, 0)
    assert faults(sandbox) == {"create_429": 2}


def test_drop_before_create_closes_without_an_answer_and_creates_nothing(start_sandbox: Start) -> None:
    sandbox = start_sandbox(drop_before_create_rate=1.0)
    with client_of(sandbox) as client:
        with pytest.raises(httpx.RemoteProtocolError, match=NO_RESPONSE):
            create(client)
        big = {"version": SD, "input": {"prompt": "x" * 500_000}}  # read whole first: a clean close
        with pytest.raises(httpx.RemoteProtocolError, match=NO_RESPONSE):
            client.post("/predictions", json=big)
        assert listed(client) == []
    stats = sandbox.stats()
    assert (stats["requests"]["create"], stats["predictions"]["total"]) == (2, 0)
    assert faults(sandbox) == {"drop_before_create": 2}


def test_drop_after_create_makes_exactly_one_prediction(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=0.01, drop_after_create_rate=1.0)
    with client_of(sandbox) as client:
        with pytest.raises(httpx.RemoteProtocolError, match=NO_RESPONSE):
            create(client, "ambiguous")
        [made] = wait_listed(client, 1)
    assert (made["input"]["prompt"], made["status"]) == ("ambiguous", "succeeded")
    stats = sandbox.stats()
    assert (stats["requests"]["create"], stats["predictions"]["total"], stats["duplicates"]) == (1, 1, 0)
    assert faults(sandbox) == {"drop_after_create": 1}


def test_the_async_client_sees_the_same_drops(start_sandbox: Start) -> None:
    sandbox = start_sandbox(drop_after_create_rate=1.0, drop_poll_rate=1.0)

    async def scenario() -> list[BaseException]:
        errors: list[BaseException] = []
        async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH, trust_env=False) as client:
            try:
                await client.post("/predictions", json={"version": SD, "input": SMALL})
            except httpx.HTTPError as exc:
                errors.append(exc)
            prediction_id = (await client.get("/predictions")).json()["results"][0]["id"]
            try:
                await client.get(f"/predictions/{prediction_id}")
            except httpx.HTTPError as exc:
                errors.append(exc)
        return errors

    create_error, poll_error = asyncio.run(scenario())
    assert isinstance(create_error, httpx.RemoteProtocolError) and str(create_error) == NO_RESPONSE
    assert isinstance(poll_error, httpx.RemoteProtocolError) and str(poll_error).startswith(HALF_BODY)


def test_drop_poll_cuts_the_body_in_half(start_sandbox: Start) -> None:
    sandbox = start_sandbox(drop_poll_rate=1.0)
    with client_of(sandbox) as client:
        prediction_id = create(client).json()["id"]
        with pytest.raises(httpx.RemoteProtocolError, match=HALF_BODY):
            client.get(f"/predictions/{prediction_id}")
        with client.stream("GET", f"/predictions/{prediction_id}") as response:
            assert response.status_code == 200
            assert response.headers["ratelimit-remaining"] == "2998"  # the second poll
            with pytest.raises(httpx.RemoteProtocolError, match=r"received \d+ bytes, expected \d+"):
                response.read()
        assert client.get(f"/predictions/{prediction_id}/nope").status_code == 404  # still serving
    assert sandbox.stats()["requests"]["get"] == 2
    assert faults(sandbox) == {"drop_poll": 2}


def test_slow_responses_trip_client_timeouts(start_sandbox: Start) -> None:
    sandbox = start_sandbox(slow_rate=1.0, slow_seconds=60.0)
    with client_of(sandbox, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            create(client)
        with pytest.raises(httpx.ReadTimeout):
            client.get("/predictions")
    stats = sandbox.stats()
    assert stats["predictions"]["total"] == 1  # a slow create has made its prediction already
    assert faults(sandbox) == {"slow": 2}


def test_slow_responses_still_arrive(start_sandbox: Start) -> None:
    sandbox = start_sandbox(slow_rate=1.0, slow_seconds=0.05)
    with client_of(sandbox) as client:
        assert create(client).status_code == 201
        assert client.get("/predictions").status_code == 200
    assert faults(sandbox) == {"slow": 2}


def test_fail_rate_fails_predictions_with_realistic_errors(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=0.05, predict_seconds=0.05, fail_rate=1.0, fault_seed=1)
    with client_of(sandbox) as client:
        for n in range(8):
            assert create(client, f"lamp {n}").status_code == 201
        done = wait_listed(client, 8)
    assert {p["status"] for p in done} == {"failed"}
    errors = {p["error"] for p in done}
    assert errors == {error for error, _ in FAILURES}
    for prediction in done:
        assert prediction["output"] is None
        if prediction["error"].startswith("E6716"):  # it never started
            assert "started_at" not in prediction
            assert prediction["logs"] == prediction["error"] + "\n"
        else:
            assert "started_at" in prediction
            assert prediction["logs"].endswith(prediction["error"] + "\n")
    assert faults(sandbox) == {"fail": 8}


def test_file_5xx_and_drop_file(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=0.01, file_5xx_rate=0.5, drop_file_rate=1.0)
    with client_of(sandbox) as client:
        create(client)
        [done] = wait_listed(client, 1)
    url = done["output"][0]
    outcomes: list[int | str] = []
    for _ in range(6):
        try:
            outcomes.append(httpx.get(url, trust_env=False).status_code)
        except httpx.RemoteProtocolError as exc:
            assert str(exc).startswith(HALF_BODY)
            outcomes.append("dropped")
    errors = [o for o in outcomes if o != "dropped"]
    assert errors == [500, 502, 503, 504][: len(errors)]
    counted = faults(sandbox)
    assert counted == {"file_5xx": len(errors), "drop_file": 6 - len(errors)}
    assert 0 < len(errors) < 6  # seed 0 gives both kinds
    assert sandbox.stats()["requests"]["file"] == 6


def outcomes_of(client: httpx.Client, prediction_id: str, count: int) -> list[int]:
    return [client.get(f"/predictions/{prediction_id}").status_code for _ in range(count)]


def test_faults_are_reproducible_for_a_seed(start_sandbox: Start) -> None:
    first = start_sandbox(poll_5xx_rate=0.5, fault_seed=42)
    with client_of(first) as client:
        prediction_id = create(client).json()["id"]
        sequence = outcomes_of(client, prediction_id, 20)
        first.reset()  # re-seeds
        assert outcomes_of(client, prediction_id, 20) == sequence
    assert 0 < sequence.count(200) < 20
    again = start_sandbox(poll_5xx_rate=0.5, fault_seed=42)
    other = start_sandbox(poll_5xx_rate=0.5, fault_seed=43)
    with client_of(again) as a, client_of(other) as b:
        assert outcomes_of(a, create(a).json()["id"], 20) == sequence
        assert outcomes_of(b, create(b).json()["id"], 20) != sequence


def test_duplicates_count_repeated_version_and_input(api: httpx.Client, sandbox: Sandbox) -> None:
    def post(version: str, input: dict[str, Any]) -> None:
        assert api.post("/predictions", json={"version": version, "input": input}).status_code == 201

    post(SD, SMALL)
    assert sandbox.stats()["duplicates"] == 0
    post(SD, dict(reversed(SMALL.items())))  # key order does not matter
    post(f"stability-ai/stable-diffusion:{SD}", SMALL)  # nor how the version is spelled
    assert sandbox.stats()["duplicates"] == 2
    post(SD, {**SMALL, "prompt": "another lamp"})
    post(SD, {**SMALL, "seed": 1})
    assert sandbox.stats()["duplicates"] == 2
    sandbox.reset()
    post(SD, SMALL)
    assert sandbox.stats()["duplicates"] == 0


def test_many_concurrent_creates_under_drops(start_sandbox: Start) -> None:
    sandbox = start_sandbox(
        queue_seconds=0.0, predict_seconds=0.5, drop_before_create_rate=0.2, drop_after_create_rate=0.3
    )
    count = 300

    async def scenario() -> list[httpx.Response | BaseException]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=sandbox.base_url, headers=AUTH, trust_env=False, limits=limits, timeout=60
        ) as client:
            posts = (
                client.post("/predictions", json={"version": SD, "input": {**SMALL, "prompt": f"lamp {n}"}})
                for n in range(count)
            )
            return await asyncio.gather(*posts, return_exceptions=True)

    answers = asyncio.run(scenario())
    dropped = [a for a in answers if isinstance(a, BaseException)]
    assert all(isinstance(a, httpx.RemoteProtocolError) for a in dropped)
    assert all(a.status_code == 201 for a in answers if isinstance(a, httpx.Response))
    stats = sandbox.stats()
    counted = stats["faults"]
    assert len(dropped) == counted["drop_before_create"] + counted["drop_after_create"]
    assert stats["predictions"]["total"] == count - counted["drop_before_create"]
    assert (stats["requests"]["create"], stats["duplicates"]) == (count, 0)


def test_a_drop_outside_uvicorn_raises_in_the_app(tmp_path: Path) -> None:
    app = create_app(SandboxConfig(drop_before_create_rate=1.0, store=str(tmp_path)))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox", headers=AUTH) as client:
            await client.post("/replicate/v1/predictions", json={"version": SD, "input": SMALL})

    with pytest.raises(ConnectionDropped, match="dropped this connection on purpose"):
        asyncio.run(scenario())
    app.state.sandbox.close()
