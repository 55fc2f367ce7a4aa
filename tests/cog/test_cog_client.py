"""CogClient against real coglet servers: results, ids, lost answers, cancel, failures, readiness."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import time
from datetime import datetime, timezone

import httpx
import pytest
from PIL import Image, ImageDraw

from kkiai_pipeline.api.cog import (
    CogClient,
    CogOptions,
    CogPredictionLost,
    CogPredictionUnknown,
    CogServerUnavailable,
)
from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.errors import ConfigError, DeadlineExceeded, ValidationFailed

from .conftest import CogServers
from .helpers import (
    FAILING,
    FAST,
    REMBG,
    SLEEPY,
    SLOW,
    LosePutAnswers,
    Recording,
    make_client,
    run,
    socket_without_listener,
)


def png_data_uri() -> str:
    """A 64x64 product shot: a green disc on a light grey background."""
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(20, 140, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def create_and_wait(client: CogClient, version: str, **input: object) -> Prediction:
    return await client.wait(await client.create(version, input))


def test_rembg_succeeds_with_a_transparent_png_as_a_data_uri(cog: CogServers) -> None:
    final = run(make_client(cog), lambda c: create_and_wait(c, REMBG, image=png_data_uri()))

    assert final.status == "succeeded"
    assert final.error is None
    header, _, payload = final.output.partition(",")
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(payload))) as png:
        assert png.format == "PNG"
        assert png.mode == "RGBA"
        assert [png.getpixel(xy)[3] for xy in ((0, 0), (63, 0), (0, 63), (63, 63))] == [0, 0, 0, 0]
        assert png.getpixel((32, 32)) == (20, 140, 40, 255)
    assert final.metrics["predict_time"] > 0
    assert final.created_at and final.started_at and final.completed_at


def test_the_id_we_choose_is_the_id_cog_reports(cog: CogServers) -> None:
    transport = Recording()
    client = make_client(cog, transport=transport)

    async def go(c: CogClient) -> tuple[Prediction, Prediction]:
        created = await c.create(SLOW, {"tag": "ids"})
        return created, await c.wait(created)

    created, final = run(client, go)

    puts = [(path, body) for method, path, body in transport.exchanges if method == "PUT"]
    assert created.id is not None
    assert puts == [(f"/predictions/{created.id}", {"id": created.id, "status": "starting"})]
    assert final.id == created.id
    assert final.output == "slept 0 s (ids)"


def test_a_put_whose_answer_is_lost_is_followed_by_webhook_and_never_sent_again(cog: CogServers) -> None:
    transport = LosePutAnswers(forward=True)
    client = make_client(cog, transport=transport)

    final = run(client, lambda c: create_and_wait(c, SLOW, tag="lost-answer"))

    assert final.status == "succeeded"
    assert final.output == "slept 0 s (lost-answer)"
    assert len(transport.puts) == 1
    assert [e["event"] for e in cog.slow.runs("lost-answer")] == ["start", "end"]
    assert (client.stats.creates, client.stats.ambiguous_creates) == (1, 1)


def test_cog_runs_a_finished_prediction_again_when_its_put_is_resent(cog: CogServers) -> None:
    """Why a lost PUT answer is never answered with a second PUT (see api/cog.py)."""
    body = {"id": "resent", "input": {"tag": "resent"}}
    with httpx.Client(base_url=cog.slow.url, trust_env=False, timeout=30) as http:
        first = http.put("/predictions/resent", json=body)
        for _ in range(500):  # the slot frees a moment after the answer: until then, 409
            second = http.put("/predictions/resent", json=body)
            if second.status_code != 409:
                break
            time.sleep(0.01)

    assert (first.json()["status"], second.json()["status"]) == ("succeeded", "succeeded")
    assert [e["event"] for e in cog.slow.runs("resent")] == ["start", "end", "start", "end"]


def test_a_put_that_never_arrived_is_reported_lost_not_resent(cog: CogServers) -> None:
    transport = LosePutAnswers(forward=False)
    client = make_client(cog, transport=transport)

    async def go(c: CogClient) -> tuple[CogPredictionLost, Prediction]:
        created = await c.create(SLOW, {"tag": "never-arrived"})
        with pytest.raises(CogPredictionLost) as caught:
            await c.wait(created)
        after = await create_and_wait(c, SLOW, tag="after-lost")  # the slot was given back
        return caught.value, after

    lost, after = run(client, go)

    pid = lost.prediction.id
    assert str(lost) == (
        f"prediction {pid} was lost: the answer to its PUT never came, and the Cog server for 'test/slow' at "
        f"{cog.slow.url} has not reported it in 0.5 s (health-check says READY). It was not sent again, so "
        "that it cannot run twice"
    )
    assert lost.prediction.status == "failed"
    assert cog.slow.runs("never-arrived") == []
    assert transport.puts == [f"/predictions/{pid}", f"/predictions/{after.id}"]
    assert after.status == "succeeded"


def test_cancel_ends_canceled_and_frees_the_server_for_the_next_prediction(cog: CogServers) -> None:
    client = make_client(cog)

    async def go(c: CogClient) -> tuple[Prediction, Prediction]:
        created = await c.create(SLOW, {"seconds": 60, "tag": "to-cancel"})
        assert created.id is not None
        follow = asyncio.create_task(c.wait(created))
        while (await c.get(created.id)).status != "processing":
            await asyncio.sleep(0.01)
        follow.cancel()  # what Ctrl-C does to the step's task; the step runner then cancels
        canceled = await c.cancel(created.id)
        with pytest.raises(asyncio.CancelledError):
            await follow
        return canceled, await create_and_wait(c, SLOW, tag="after-cancel")

    canceled, nxt = run(client, go)

    assert canceled.status == "canceled"
    assert canceled.completed_at is not None
    assert [e["event"] for e in cog.slow.runs("to-cancel")] == ["start"]
    assert nxt.status == "succeeded"


def test_wait_reports_each_status_change_once(cog: CogServers) -> None:
    statuses: list[str] = []

    async def on_update(update: Prediction) -> None:
        statuses.append(update.status)

    async def go(c: CogClient) -> Prediction:
        created = await c.create(SLOW, {"seconds": 0.2, "tag": "updates"})
        statuses.append(created.status)
        return await c.wait(created, on_update=on_update)

    final = run(make_client(cog), go)

    assert final.status == "succeeded"
    assert statuses in (["starting", "processing", "succeeded"], ["processing", "succeeded"])


def test_a_deadline_raises_deadline_exceeded_and_leaves_the_prediction_running(cog: CogServers) -> None:
    client = make_client(cog)

    async def go(c: CogClient) -> tuple[DeadlineExceeded, str | None, Prediction]:
        created = await c.create(SLOW, {"seconds": 60, "tag": "deadline"})
        with pytest.raises(DeadlineExceeded) as caught:
            await c.wait(created, deadline=time.monotonic() + 0.3)
        busy = cog.slow.health()  # wait() never cancels: the caller does
        assert created.id is not None
        return caught.value, busy, await c.cancel(created.id)

    exceeded, busy, canceled = run(client, go)

    pid = exceeded.prediction.id
    assert (
        str(exceeded) == f"prediction {pid} was still {exceeded.prediction.status} when its deadline passed"
    )
    assert exceeded.prediction.status in ("starting", "processing")
    assert busy == "BUSY"
    assert canceled.status == "canceled"


def test_a_failing_model_ends_failed_with_cogs_error(cog: CogServers) -> None:
    final = run(make_client(cog), lambda c: create_and_wait(c, FAILING, prompt="a cat"))

    assert final.status == "failed"
    assert final.error is not None
    assert final.error.endswith("ValueError: cannot draw 'a cat': out of crayons")


def test_invalid_input_raises_validation_failed_and_frees_the_slot(cog: CogServers) -> None:
    async def go(c: CogClient) -> tuple[ValidationFailed, Prediction]:
        with pytest.raises(ValidationFailed) as caught:
            await c.create(SLOW, {"seconds": -1, "tag": "invalid"})
        return caught.value, await create_and_wait(c, SLOW, tag="after-invalid")

    error, after = run(make_client(cog), go)

    assert str(error).startswith(
        f"the Cog server for 'test/slow' answered 422 to PUT {cog.slow.url}/predictions/"
    )
    assert str(error).endswith(": invalid input [seconds: -1 is less than the minimum of 0]")
    assert error.invalid_fields == ({"field": "seconds", "description": "-1 is less than the minimum of 0"},)
    assert error.status_code == 422
    assert cog.slow.runs("invalid") == []
    assert after.status == "succeeded"


def test_two_creates_on_one_server_run_one_after_the_other(cog: CogServers) -> None:
    client = make_client(cog)

    async def go(c: CogClient) -> list[Prediction]:
        return list(
            await asyncio.gather(*(create_and_wait(c, SLOW, seconds=0.2, tag=f"seq-{i}") for i in (1, 2)))
        )

    finals = run(client, go)

    assert [f.status for f in finals] == ["succeeded", "succeeded"]
    events = [(e["event"], e["tag"]) for e in cog.slow.runs() if e["tag"].startswith("seq-")]
    first, second = events[0][1], events[2][1]
    assert events == [("start", first), ("end", first), ("start", second), ("end", second)]
    assert {first, second} == {"seq-1", "seq-2"}


def test_a_second_create_waits_for_the_slot_without_sending_anything(cog: CogServers) -> None:
    async def go(c: CogClient) -> tuple[int, bool, Prediction]:
        first = await c.create(SLOW, {"seconds": 60, "tag": "slot-1"})
        second = asyncio.create_task(create_and_wait(c, SLOW, tag="slot-2"))
        await asyncio.sleep(0.2)  # ample time to send a PUT, were the slot free
        held = (c.stats.creates, second.done())
        assert first.id is not None
        await c.cancel(first.id)
        return held[0], held[1], await second

    creates, done, second = run(make_client(cog), go)

    assert (creates, done) == (1, False)
    assert second.status == "succeeded"
    assert [e["event"] for e in cog.slow.runs("slot-2")] == ["start", "end"]


def test_a_busy_server_409_is_waited_out(cog: CogServers) -> None:
    """Another client (or a concurrency set too high) meets 409 and waits: never fails, never duplicates."""
    other = make_client(cog)
    client = make_client(cog)

    async def go(c: CogClient) -> tuple[Prediction, Prediction]:
        async with other:
            first = await other.create(SLOW, {"seconds": 1, "tag": "busy-1"})
            second = await create_and_wait(c, SLOW, tag="busy-2")
            return await other.wait(first), second

    first, second = run(client, go)

    assert (first.status, second.status) == ("succeeded", "succeeded")
    events = [(e["event"], e["tag"]) for e in cog.slow.runs() if e["tag"].startswith("busy-")]
    assert events == [("start", "busy-1"), ("end", "busy-1"), ("start", "busy-2"), ("end", "busy-2")]
    assert client.stats.retries["409"] >= 1


def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket_without_listener() as port:
        url = f"http://127.0.0.1:{port}"
        client = CogClient(servers={"test/gone": url}, options=FAST)
        with pytest.raises(CogServerUnavailable) as caught:
            run(client, lambda c: c.create("test/gone:abc", {}))

    assert str(caught.value).startswith(
        f"cannot reach the Cog server for 'test/gone' at {url} (ConnectError: "
    )
    assert str(caught.value).endswith("); is it running?")
    assert (caught.value.model, caught.value.url) == ("test/gone", url)
    assert client.stats.creates == 0


def test_a_server_not_ready_in_time_is_a_clear_error(cog: CogServers) -> None:
    client = make_client(cog, options=dataclasses.replace(FAST, ready_timeout=0.3))
    with pytest.raises(CogServerUnavailable) as caught:
        run(client, lambda c: c.create(SLEEPY, {}))

    assert str(caught.value) == (
        f"the Cog server for 'test/sleepy' at {cog.sleepy.url} was not ready after 0.3 s "
        "(health-check says STARTING)"
    )
    assert client.stats.creates == 0


def test_a_server_whose_setup_failed_is_a_clear_error_at_once(cog: CogServers) -> None:
    with pytest.raises(CogServerUnavailable) as caught:
        run(make_client(cog), lambda c: c.create("test/broken:1", {}))

    message = str(caught.value)
    assert message.startswith(f"the Cog server for 'test/broken' at {cog.broken.url} reports SETUP_FAILED: ")
    assert "RuntimeError: weights.bin is missing" in message


def test_a_model_without_a_server_is_a_config_error(cog: CogServers) -> None:
    with pytest.raises(ConfigError) as caught:
        run(make_client(cog), lambda c: c.create("acme/unknown:123", {}))

    assert str(caught.value) == (
        "no Cog server is configured for model 'acme/unknown' (configured: test/broken, test/failing, "
        "test/rembg, test/sleepy, test/slow); add it to cog.servers, e.g. "
        "'cog.servers={acme/unknown:http://127.0.0.1:5000}' (the map lists every model's server)"
    )


def test_get_knows_only_this_processs_predictions_and_find_created_finds_nothing(cog: CogServers) -> None:
    async def go(c: CogClient) -> tuple[Prediction, Prediction | None]:
        final = await create_and_wait(c, SLOW, tag="get")
        assert final.id is not None
        with pytest.raises(CogPredictionUnknown) as caught:
            await c.get("from-an-earlier-run")
        assert str(caught.value) == (
            "prediction from-an-earlier-run is not known to this process, and a Cog server keeps no record "
            "of predictions (GET /predictions/{id} is not served), so it cannot be re-attached: run the step again"
        )
        found = await c.find_created(SLOW, {"tag": "get"}, since=datetime(2000, 1, 1, tzinfo=timezone.utc))
        return await c.get(final.id), found

    got, found = run(make_client(cog), go)

    assert got.status == "succeeded"
    assert found is None


def test_cancel_after_a_prediction_finished_returns_it_unchanged(cog: CogServers) -> None:
    async def go(c: CogClient) -> tuple[Prediction, Prediction]:
        final = await create_and_wait(c, SLOW, tag="late-cancel")
        assert final.id is not None
        return final, await c.cancel(final.id)

    final, canceled = run(make_client(cog), go)

    assert canceled == final


def test_servers_and_concurrency_are_checked_when_the_client_is_made() -> None:
    with pytest.raises(
        ConfigError, match=r"^the Cog server of 'a/b' must be an http\(s\) URL, not 'localhost:5000'$"
    ):
        CogClient(servers={"a/b": "localhost:5000"})
    with pytest.raises(ConfigError, match=r"^concurrency is set for models without a Cog server: c/d$"):
        CogClient(servers={"a/b": "http://127.0.0.1:5000"}, concurrency={"c/d": 2})
    with pytest.raises(ConfigError, match=r"^the concurrency of 'a/b' must be at least 1, not 0$"):
        CogClient(servers={"a/b": "http://127.0.0.1:5000"}, concurrency={"a/b": 0})
    with pytest.raises(ConfigError, match=r"^cog.lost_after must not be negative, not -1$"):
        CogOptions(lost_after=-1)


def test_server_url_names_the_server_of_a_version() -> None:
    client = CogClient(servers={"a/b": "http://127.0.0.1:5000/", "c/d": "http://127.0.0.1:5001"})

    assert client.server_url("a/b:0123abcd") == "http://127.0.0.1:5000"
    assert client.server_url("c/d") == "http://127.0.0.1:5001"
    with pytest.raises(ConfigError, match=r"^no Cog server is configured for model 'e/f' "):
        client.server_url("e/f:1")
    asyncio.run(client.aclose())
