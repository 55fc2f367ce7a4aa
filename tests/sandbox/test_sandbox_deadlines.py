"""``Cancel-After`` deadlines: parsing, the lifecycle on a fake clock, and the API over loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.catalog import ModelSpec, default_catalog
from kkiai_pipeline.sandbox import Sandbox, wire
from kkiai_pipeline.sandbox.deadlines import CancelAfterError, cancel_after, parse_duration
from kkiai_pipeline.sandbox.store import Store

from .helpers import AUTH, TERMINAL, FakeClock, open_store, version_of

SD = version_of("stability-ai/stable-diffusion")
SMALL = {"prompt": "a lamp", "width": 64, "height": 64}

Start = Callable[..., Sandbox]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m45s", 5445), ("2h", 7200), ("1m30s", 90), ("90", 90), ("1.5", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 m", "-5", "1s2m", "5ms", "s", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(CancelAfterError, match="Cancel-After must be a duration such as 30s, 5m or 1h30m45s"):
        parse_duration(text)


def test_short_deadlines_are_raised_to_the_minimum() -> None:
    assert cancel_after(None, minimum=5) is None
    assert cancel_after("1s", minimum=5) == 5
    assert cancel_after("1m", minimum=5) == 60


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    with open_store(tmp_path, clock) as store:
        yield store


def sd() -> ModelSpec:
    found = default_catalog().find("stability-ai/stable-diffusion")
    assert found is not None
    return found


def test_a_deadline_while_starting_aborts(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), SMALL, files={}, cancel_after=0.5)
        clock.now += 0.4
        assert store.snapshot(prediction.id).status == "starting"
        clock.now += 0.1
        snapshot = store.snapshot(prediction.id)
        assert (snapshot.status, snapshot.started, snapshot.completed) == ("aborted", None, 1000.5)
        doc = wire.prediction_json(prediction, snapshot, link=str)
        assert (doc["output"], doc["logs"], doc["error"], "started_at" in doc) == (None, None, None, False)
        assert doc["deadline"] == wire.timestamp(1000.5)
        clock.now += 10
        assert store.snapshot(prediction.id).status == "aborted"  # for good
        store.cancel(prediction.id)
        assert store.snapshot(prediction.id).status == "aborted"

    asyncio.run(scenario())


def test_a_deadline_while_processing_cancels(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), SMALL, files={}, cancel_after=2.0)
        render = store.rendering(prediction.id)
        clock.now += 1.5
        assert store.snapshot(prediction.id).status == "processing"
        clock.now += 0.5
        snapshot = store.snapshot(prediction.id)
        assert (snapshot.status, snapshot.started, snapshot.completed) == ("canceled", 1001.0, 1002.0)
        assert render is not None and render.cancelled()

    asyncio.run(scenario())


def test_a_prediction_done_before_its_deadline_keeps_its_result(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), SMALL, files={}, cancel_after=60.0)
        render = store.rendering(prediction.id)
        assert render is not None
        await render
        clock.now += 100
        assert store.snapshot(prediction.id).status == "succeeded"

    asyncio.run(scenario())


def test_a_failure_while_starting_never_processes(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(
            sd(), SMALL, files={}, planned_error="E6716 Timeout Starting Prediction", fails_starting=True
        )
        clock.now += 0.9
        assert store.snapshot(prediction.id).status == "starting"
        clock.now += 0.1
        snapshot = store.snapshot(prediction.id)
        assert (snapshot.status, snapshot.started, snapshot.completed) == ("failed", None, 1001.0)
        doc = wire.prediction_json(prediction, snapshot, link=str)
        assert doc["logs"] == "E6716 Timeout Starting Prediction\n"
        assert doc["metrics"] == {"predict_time": 0.0, "total_time": 1.0}

    asyncio.run(scenario())


def test_no_deadline_no_field(store: Store) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), SMALL, files={})
        doc = wire.prediction_json(prediction, store.snapshot(prediction.id), link=str)
        assert "deadline" not in doc

    asyncio.run(scenario())


def create(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post("/predictions", json={"version": SD, "input": SMALL}, headers=headers)


def wait_done(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/predictions/{prediction_id}").json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.01)
    raise AssertionError(f"prediction {prediction_id} never finished")


def seconds_between(start: str, end: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")

    return (parse(end) - parse(start)).total_seconds()


def test_cancel_after_aborts_a_queued_prediction(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=60.0, min_cancel_after_seconds=0.0)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        created = create(client, **{"Cancel-After": "0.2s"}).json()
        assert created["status"] == "starting"
        assert seconds_between(created["created_at"], created["deadline"]) == pytest.approx(0.2, abs=1e-5)
        done = wait_done(client, created["id"])
    assert (done["status"], done["output"], done["error"], "started_at" in done) == (
        "aborted",
        None,
        None,
        False,
    )
    assert done["completed_at"] == done["deadline"]
    assert sandbox.stats()["predictions"]["aborted"] == 1


def test_cancel_after_cancels_a_running_prediction(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=60.0, min_cancel_after_seconds=0.0)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        created = create(client, **{"Cancel-After": "0.2"}).json()
        done = wait_done(client, created["id"])
    assert (done["status"], done["output"], done["logs"]) == ("canceled", None, None)
    assert "started_at" in done and done["completed_at"] == done["deadline"]
    assert sandbox.stats()["predictions"]["canceled"] == 1


def test_prefer_wait_returns_at_the_deadline(start_sandbox: Start) -> None:
    sandbox = start_sandbox(queue_seconds=60.0, min_cancel_after_seconds=0.0)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        response = create(client, **{"Cancel-After": "0.1s", "Prefer": "wait=30"})
    assert (response.status_code, response.json()["status"]) == (201, "aborted")


def test_the_minimum_deadline_is_five_seconds_by_default(api: httpx.Client) -> None:
    created = create(api, **{"Cancel-After": "1s"}).json()
    assert seconds_between(created["created_at"], created["deadline"]) == pytest.approx(5.0, abs=1e-5)
    longer = create(api, **{"Cancel-After": "1h30m45s"}).json()
    assert seconds_between(longer["created_at"], longer["deadline"]) == pytest.approx(5445.0, abs=1e-5)


def test_an_unreadable_cancel_after_is_refused(api: httpx.Client, sandbox: Sandbox) -> None:
    response = create(api, **{"Cancel-After": "soon"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "title": "Invalid Cancel-After header",
        "detail": "Cancel-After must be a duration such as 30s, 5m or 1h30m45s, or a number of seconds; got 'soon'",
        "status": 400,
    }
    assert sandbox.stats()["predictions"]["total"] == 0


def test_without_cancel_after_there_is_no_deadline(api: httpx.Client) -> None:
    assert "deadline" not in create(api).json()
