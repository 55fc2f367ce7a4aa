"""Many predictions waited for at once are followed through the list of predictions, counted at the
server; without a usable list, each is polled as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from kkiai_pipeline.api import follower
from kkiai_pipeline.api.client import ClientOptions, PredictionsClient
from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.errors import DeadlineExceeded
from tests.fakes.fake_api import TOKEN, Answer, Ask, FakeApi, json_answer

SDXL = "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
MANY = 30
OPTIONS = ClientOptions(
    wait_seconds=0,  # every create answers `starting`: all of them are followed
    poll_interval=0.1,
    max_poll_interval=0.2,
    create_rate_per_minute=0,
    other_rate_per_minute=0,
)


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    with FakeApi() as server:
        server.knobs.predict_seconds = 0.8
        yield server


async def _run(
    fake: FakeApi, count: int, *, deadline: float | None = None
) -> list[Prediction | BaseException]:
    async with PredictionsClient(base_url=fake.base_url, token=TOKEN, options=OPTIONS) as client:
        created = await asyncio.gather(*(client.create(SDXL, {"prompt": f"p{n}"}) for n in range(count)))
        waits = (client.wait(p, deadline=deadline) for p in created)
        return list(await asyncio.gather(*waits, return_exceptions=True))


def _all_succeeded(results: list[Prediction | BaseException], fake: FakeApi) -> None:
    assert all(isinstance(r, Prediction) and r.status == "succeeded" and r.output for r in results), results
    assert fake.counters.creates == len(results) and fake.counters.duplicates() == 0


def test_many_waits_take_a_fraction_of_the_requests_polls_take(
    fake: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    _all_succeeded(asyncio.run(_run(fake, MANY)), fake)
    listed = fake.counters.requests - MANY
    assert fake.counters.lists >= 2  # sweeps, answering many predictions each
    assert fake.counters.gets < MANY  # a few missed a sweep at most

    with FakeApi() as polled:
        polled.knobs.predict_seconds = fake.knobs.predict_seconds
        monkeypatch.setattr(follower, "LIST_FROM", 10**6)  # the same waits, each polled on its own
        _all_succeeded(asyncio.run(_run(polled, MANY)), polled)
        assert polled.counters.lists == 0
        assert listed * 3 < polled.counters.requests - MANY


def test_few_waits_are_polled_on_their_own(fake: FakeApi) -> None:
    _all_succeeded(asyncio.run(_run(fake, follower.LIST_FROM - 1)), fake)
    assert fake.counters.lists == 0 and fake.counters.gets > 0


def test_without_a_list_every_prediction_is_polled(fake: FakeApi) -> None:
    fake.knobs.list_status = 404
    _all_succeeded(asyncio.run(_run(fake, MANY)), fake)
    assert fake.counters.lists == 1  # tried once, then polls only
    assert fake.counters.gets >= MANY


def test_an_unusable_list_page_falls_back_to_polls(fake: FakeApi) -> None:
    fake.knobs.rewrite["list"] = lambda ask: Answer(status=200, body=b"<html>busy</html>")
    _all_succeeded(asyncio.run(_run(fake, MANY)), fake)
    assert fake.counters.lists == 1 and fake.counters.gets >= MANY


def test_a_listed_success_without_its_output_is_confirmed_by_a_get(fake: FakeApi) -> None:
    def strip(ask: Ask) -> Answer | None:
        view = ask.view
        if view is None:
            return None
        results = [dict(item, output=None) for item in view.get("results", [])]
        return json_answer(dict(view, results=results))

    fake.knobs.rewrite["list"] = strip
    _all_succeeded(asyncio.run(_run(fake, MANY)), fake)
    assert fake.counters.lists >= 1 and fake.counters.gets >= MANY  # each success confirmed by a GET


def test_the_deadline_holds_while_waiting_for_a_sweep(fake: FakeApi) -> None:
    fake.knobs.predict_seconds = 30.0
    results = asyncio.run(_run(fake, MANY, deadline=time.monotonic() + 0.5))
    assert all(isinstance(r, DeadlineExceeded) for r in results), results
    assert all(
        r.prediction.status in ("starting", "processing") for r in results if isinstance(r, DeadlineExceeded)
    )
