"""The webhook receiver: served in the caller's loop, on loopback, behind a token; leaves Ctrl-C alone."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.api.webhooks import PredictionState, WebhookReceiver


def test_webhooks_reach_the_callback_on_the_callers_loop() -> None:
    received: list[tuple[str, Mapping[str, Any], asyncio.AbstractEventLoop]] = []

    async def go() -> tuple[str, list[int]]:
        receiver = WebhookReceiver(lambda pid, body: received.append((pid, body, asyncio.get_running_loop())))
        await receiver.start()
        await receiver.start()  # idempotent
        url = receiver.url_for("p1")
        async with httpx.AsyncClient(trust_env=False) as http:
            codes = [
                (await http.post(url, json={"id": "p1", "status": "processing"})).status_code,
                (
                    await http.post(url.replace("/p1", "/p2").rsplit("/", 2)[0] + "/wrong-token/p2", json={})
                ).status_code,
                (await http.post(url, content=b"not json")).status_code,
                (await http.post(url, json=["not", "an", "object"])).status_code,
                (await http.post(url, content=b"[" * 10_000 + b"]" * 10_000)).status_code,  # hostile depth
            ]
        await receiver.aclose()
        assert received and received[0][2] is asyncio.get_running_loop()
        return url, codes

    url, codes = asyncio.run(go())

    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/p1")
    assert codes == [200, 404, 400, 400, 413]
    assert [(pid, body) for pid, body, _ in received] == [("p1", {"id": "p1", "status": "processing"})]


def test_the_receiver_stops_listening_when_closed() -> None:
    async def go() -> None:
        receiver = WebhookReceiver(lambda pid, body: None)
        await receiver.start()
        url = receiver.url_for("p1")
        await receiver.aclose()
        await receiver.aclose()  # idempotent
        async with httpx.AsyncClient(trust_env=False) as http:
            with pytest.raises(httpx.ConnectError):
                await http.post(url, json={})
        with pytest.raises(RuntimeError, match=r"^the webhook receiver has not been started$"):
            WebhookReceiver(lambda pid, body: None).url_for("p1")

    asyncio.run(go())


def test_the_receiver_leaves_signal_handlers_alone() -> None:
    async def go() -> tuple[object, object]:
        before = signal.getsignal(signal.SIGINT)  # asyncio.run's own, which cancels the main task
        receiver = WebhookReceiver(lambda pid, body: None)
        await receiver.start()
        await asyncio.sleep(0.05)  # let uvicorn's serve() get past where it would install handlers
        during = signal.getsignal(signal.SIGINT)
        await receiver.aclose()
        return before, during

    before, during = asyncio.run(go())

    assert during is before


def test_the_advertised_host_names_the_urls() -> None:
    async def go() -> str:
        receiver = WebhookReceiver(lambda pid, body: None, advertised_host="host.docker.internal")
        await receiver.start()
        try:
            return receiver.url_for("p9")
        finally:
            await receiver.aclose()

    url = asyncio.run(go())

    assert url.startswith("http://host.docker.internal:")
    assert url.endswith("/p9")


def test_progress_never_moves_backwards_and_stamps_times() -> None:
    async def go() -> tuple[PredictionState, list[str], int]:
        ended: list[str] = []
        progress = PredictionState(
            Prediction(id="p1", status="starting", created_at="2026-01-01T00:00:00.000000Z")
        )
        progress.on_terminal = lambda: ended.append(progress.prediction.status)
        first_change = progress.changed
        progress.update(
            Prediction(id="p1", status="succeeded", output="data:,x", metrics={"predict_time": 1})
        )
        progress.update(Prediction(id="p1", status="processing"))  # a late "start" webhook
        progress.update(Prediction(id="p1", status="succeeded", output="again"))  # a re-delivered one
        return progress, ended, int(first_change.is_set())

    progress, ended, woke = asyncio.run(go())

    final = progress.prediction
    assert (final.status, final.output, dict(final.metrics)) == ("succeeded", "data:,x", {"predict_time": 1})
    assert final.created_at == "2026-01-01T00:00:00.000000Z"
    assert final.started_at is not None and final.completed_at is not None
    assert ended == ["succeeded"]
    assert progress.heard
    assert woke == 1


def test_progress_settles_within_a_bound() -> None:
    async def go() -> tuple[bool, bool]:
        progress = PredictionState(Prediction(id="p1", status="processing"))
        unsettled = await progress.settled(0.05)
        asyncio.get_running_loop().call_later(0.01, progress.end, "canceled", "asked to")
        return unsettled, await progress.settled(10)

    assert asyncio.run(go()) == (False, True)
