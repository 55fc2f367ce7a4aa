"""The lifecycle is derived from recorded timestamps: checked here on a fake clock, without a server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.catalog import ModelSpec, default_catalog
from kkiai_pipeline.sandbox import models, wire
from kkiai_pipeline.sandbox.store import Store, new_id

from .helpers import FakeClock, open_store

SD_INPUT = {"prompt": "a lamp", "width": 64, "height": 64, "num_inference_steps": 8}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    with open_store(tmp_path, clock) as store:
        yield store


async def drawn(store: Store, prediction_id: str) -> None:
    """Waits until this process has drawn the prediction's files."""
    render = store.rendering(prediction_id)
    assert render is not None
    await render


def sd() -> ModelSpec:
    found = default_catalog().find("stability-ai/stable-diffusion")
    assert found is not None
    return found


def link(file: Any) -> str:
    return f"http://sandbox/{file.name}"


def test_new_ids_are_26_lowercase_alphanumerics() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 26 and i.isalnum() and i == i.lower() for i in ids)


def test_starting_processing_succeeded(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), SD_INPUT, files={})
        assert store.snapshot(prediction.id).status == "starting"
        clock.now += 1.5
        snapshot = store.snapshot(prediction.id)
        assert (snapshot.status, snapshot.progress) == ("processing", 0.25)
        await drawn(store, prediction.id)
        assert store.snapshot(prediction.id).status == "processing"  # files ready, but predict time not over
        clock.now += 2.0
        snapshot = store.snapshot(prediction.id)
        assert snapshot.status == "succeeded"
        assert [f.name for f in snapshot.files] == ["out-0.png"]
        assert (snapshot.started, snapshot.completed) == (1001.0, 1003.0)
        doc = wire.prediction_json(prediction, snapshot, link=link)
        assert doc["metrics"] == {"predict_time": 2.0, "total_time": 3.0, "image_count": 1}
        assert doc["output"] == ["http://sandbox/out-0.png"]

    asyncio.run(scenario())


def test_succeeds_only_once_files_are_drawn(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = threading.Event()
    real_predict = models.predict

    def slow_predict(*args: Any, **kwargs: Any) -> list[models.OutputFile]:
        drawn.wait(timeout=30)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(models, "predict", slow_predict)

    async def scenario() -> None:
        prediction = store.create(sd(), SD_INPUT, files={})
        clock.now += 10.0
        assert store.snapshot(prediction.id).status == "processing"
        render = store.rendering(prediction.id)
        assert render is not None
        drawn.set()
        await render
        snapshot = store.snapshot(prediction.id)
        assert (snapshot.status, snapshot.completed) == ("succeeded", 1010.0)

    asyncio.run(scenario())


def test_planned_error_fails_after_the_predict_time(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), SD_INPUT, files={}, planned_error="E1000 boom")
        assert store.rendering(prediction.id) is None
        clock.now += 2.9
        assert store.snapshot(prediction.id).status == "processing"
        clock.now += 0.1
        snapshot = store.snapshot(prediction.id)
        assert (snapshot.status, snapshot.error, snapshot.files) == ("failed", "E1000 boom", ())
        doc = wire.prediction_json(prediction, snapshot, link=link)
        assert doc["output"] is None
        assert doc["logs"].endswith("E1000 boom\n")
        assert "image_count" not in doc["metrics"]

    asyncio.run(scenario())


def test_cancel_while_starting_and_after_success(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        early = store.create(sd(), SD_INPUT, files={})
        clock.now += 0.5
        store.cancel(early.id)
        snapshot = store.snapshot(early.id)
        assert (snapshot.status, snapshot.started, snapshot.completed) == ("canceled", None, 1000.5)
        doc = wire.prediction_json(early, snapshot, link=link)
        assert (doc["logs"], doc["output"], "started_at" in doc) == (None, None, False)
        assert doc["metrics"] == {"predict_time": 0.0, "total_time": 0.5}

        done = store.create(sd(), SD_INPUT, files={})
        await drawn(store, done.id)
        clock.now += 3.0
        store.cancel(done.id)
        assert store.snapshot(done.id).status == "succeeded"

    asyncio.run(scenario())


def test_logs_show_seed_and_progress(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), {**SD_INPUT, "seed": 1234}, files={})
        assert wire.logs(prediction, store.snapshot(prediction.id)) == ""
        clock.now += 2.0  # half way through processing
        lines = (wire.logs(prediction, store.snapshot(prediction.id)) or "").splitlines()
        assert lines[0] == "Using seed: 1234"
        assert [line.split("|")[0] for line in lines[1:]] == ["   0%", "  25%", "  50%"]
        assert lines[3].startswith("  50%|#####     | 4/8 [")

    asyncio.run(scenario())


def test_counts_since_reset(store: Store, clock: FakeClock) -> None:
    async def scenario() -> None:
        store.create(sd(), SD_INPUT, files={})
        store.reset_counts()
        assert store.counts()["total"] == 0
        store.create(sd(), SD_INPUT, files={}, planned_error="E1000 x")
        clock.now += 5
        counts = store.counts()
        assert counts == {
            "total": 1,
            "starting": 0,
            "processing": 0,
            "succeeded": 0,
            "failed": 1,
            "canceled": 0,
            "aborted": 0,
        }

    asyncio.run(scenario())


def test_input_is_echoed_with_sorted_keys(store: Store) -> None:
    async def scenario() -> None:
        prediction = store.create(sd(), {"width": 64, "prompt": "x", "height": 64}, files={})
        assert list(prediction.input) == ["height", "prompt", "width"]

    asyncio.run(scenario())
