"""wait(deadline=...): raises DeadlineExceeded with the last prediction, and never cancels by itself."""

from __future__ import annotations

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.api.prediction import Prediction, parse_prediction
from kkiai_pipeline.errors import DeadlineExceeded

from .helpers import FakeTime, Handler, make_client, prediction, run

SLOW = ClientOptions(
    poll_interval=1.0, max_poll_interval=1.0, create_rate_per_minute=0, other_rate_per_minute=0
)


def polls(*statuses: str) -> tuple[list[httpx.Request], Handler]:
    """A server whose polls answer ``statuses`` in turn (the last one forever), logging the poll count."""
    seen: list[httpx.Request] = []
    queue = list(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(200, json=prediction(status, logs=f"poll {len(seen)}"))

    return seen, handler


def started() -> Prediction:
    return parse_prediction(prediction("starting"))


def test_deadline_raises_with_the_last_prediction_and_does_not_cancel() -> None:
    time = FakeTime(now=100.0)
    seen, handler = polls("processing")
    client = make_client(handler, time=time, options=SLOW)
    with pytest.raises(DeadlineExceeded) as caught:
        run(client, lambda c: c.wait(started(), deadline=102.5))
    assert str(caught.value) == "prediction p1 was still processing when its deadline passed"
    assert caught.value.prediction.status == "processing"
    assert caught.value.prediction.logs == "poll 3"  # the last poll, taken right at the deadline
    assert time.sleeps == [1.0, 1.0, 0.5]
    assert all(r.method == "GET" for r in seen)  # the caller cancels, not wait()


def test_finishing_at_the_deadline_is_not_an_error() -> None:
    time = FakeTime(now=0.0)
    _, handler = polls("processing", "processing", "succeeded")
    client = make_client(handler, time=time, options=SLOW)
    final = run(client, lambda c: c.wait(started(), deadline=2.5))
    assert final.status == "succeeded"


def test_a_deadline_already_passed_raises_without_polling() -> None:
    time = FakeTime(now=50.0)
    seen, handler = polls("processing")
    client = make_client(handler, time=time, options=SLOW)
    with pytest.raises(DeadlineExceeded) as caught:
        run(client, lambda c: c.wait(started(), deadline=49.0))
    assert caught.value.prediction.status == "starting"
    assert seen == []


def test_a_terminal_prediction_is_returned_even_past_its_deadline() -> None:
    client = make_client(lambda r: httpx.Response(500), time=FakeTime(now=50.0))
    done = parse_prediction(prediction("succeeded", ["https://a/1.png"]))
    assert run(client, lambda c: c.wait(done, deadline=0.0)) is done


def test_retries_stop_at_the_deadline() -> None:
    time = FakeTime(now=0.0)
    options = ClientOptions(
        poll_interval=1.0,
        max_attempts=100,
        backoff_base=4.0,
        create_rate_per_minute=0,
        other_rate_per_minute=0,
    )
    client = make_client(lambda r: httpx.Response(503), time=time, options=options)
    with pytest.raises(DeadlineExceeded) as caught:
        run(client, lambda c: c.wait(started(), deadline=10.0))
    assert str(caught.value) == (
        "prediction p1 was still starting when its deadline passed (the API was failing meanwhile: 503)"
    )
    assert caught.value.prediction.status == "starting"
    assert time.now == 10.0  # slept up to the deadline, not past it
    assert sum(time.sleeps) == 9.0 + 1.0
