from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions, PredictionsClient
from kkiai_pipeline.errors import ApiError, TransportError, ValidationFailed

BASE = "https://proxy.example/replicate/v1"
VERSION = "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def prediction(status: str, output: object = None, **extra: object) -> dict[str, object]:
    return {
        "id": "p1",
        "model": "stability-ai/sdxl",
        "version": VERSION.split(":")[1],
        "status": status,
        "output": output,
        "error": None,
        "logs": "",
        # a pass-through proxy hands out upstream URLs; the client must not follow them
        "urls": {"get": "https://api.replicate.com/v1/predictions/p1"},
        **extra,
    }


def run(
    handler: Callable[[httpx.Request], httpx.Response], coro: Callable[[PredictionsClient], object]
) -> object:
    async def main() -> object:
        options = ClientOptions(poll_interval=0, max_poll_interval=0, wait_seconds=5)
        transport = httpx.MockTransport(handler)
        async with PredictionsClient(
            base_url=BASE, token="secret-token", options=options, transport=transport
        ) as c:
            return await coro(c)  # type: ignore[misc]

    return asyncio.run(main())


def test_create_then_poll_on_our_own_base_url() -> None:
    seen: list[httpx.Request] = []
    states = iter(["processing", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(201, json=prediction("starting"))
        status = next(states)
        return httpx.Response(
            200, json=prediction(status, ["https://files.example/o.png"] if status == "succeeded" else None)
        )

    async def go(client: PredictionsClient) -> object:
        created = await client.create(VERSION, {"prompt": "x"})
        return await client.wait(created)

    final = run(handler, go)
    assert final.status == "succeeded"  # type: ignore[attr-defined]
    assert final.output == ["https://files.example/o.png"]  # type: ignore[attr-defined]
    create = seen[0]
    assert str(create.url) == f"{BASE}/predictions"
    assert json.loads(create.content) == {"version": VERSION, "input": {"prompt": "x"}}
    assert create.headers["Prefer"] == "wait=5"
    assert create.headers["Authorization"] == "Bearer secret-token"
    assert [str(r.url) for r in seen[1:]] == [f"{BASE}/predictions/p1"] * 2


def test_cancel_uses_the_cancel_path() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, str(request.url)) == ("POST", f"{BASE}/predictions/p1/cancel")
        return httpx.Response(200, json=prediction("canceled", logs=None))

    final = run(handler, lambda c: c.cancel("p1"))
    assert final.status == "canceled"  # type: ignore[attr-defined]
    assert final.logs is None  # type: ignore[attr-defined]


def test_vendor_example_body_is_a_finished_prediction() -> None:
    body = {"created": 1589478378, "data": [{"url": "https://a/1.png"}, {"url": "https://a/2.png"}]}
    final = run(lambda r: httpx.Response(200, json=body), lambda c: c.create(VERSION, {}))
    assert final.status == "succeeded"  # type: ignore[attr-defined]
    assert final.terminal  # type: ignore[attr-defined]
    assert final.output == ["https://a/1.png", "https://a/2.png"]  # type: ignore[attr-defined]
    assert final.created_at == "2020-05-14T17:46:18Z"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            401,
            {
                "title": "Unauthenticated",
                "detail": "You did not pass a valid authentication token",
                "status": 401,
            },
            "the API answered 401 to POST /replicate/v1/predictions: Unauthenticated: You did not pass a valid "
            "authentication token (check KKIAI_API_TOKEN)",
        ),
        (
            402,
            {
                "title": "Insufficient credit",
                "detail": "You have insufficient credit to run this model.",
                "status": 402,
            },
            "the API answered 402 to POST /replicate/v1/predictions: Insufficient credit: You have insufficient "
            "credit to run this model. (add credit to the account)",
        ),
        (
            404,
            {"detail": "Not found.", "status": 404},
            "the API answered 404 to POST /replicate/v1/predictions: Not found. (the prediction or model does not exist)",
        ),
        (
            502,
            "<html>bad gateway</html>",
            "the API answered 502 to POST /replicate/v1/predictions: Bad Gateway",
        ),
    ],
)
def test_error_responses_become_clear_messages(status: int, body: object, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})

    with pytest.raises(ApiError) as caught:
        run(handler, lambda c: c.create(VERSION, {}))
    assert str(caught.value) == message
    assert caught.value.status_code == status
    assert "secret-token" not in str(caught.value)


def test_422_lists_invalid_fields() -> None:
    body = {
        "title": "Input validation failed",
        "detail": "- input: prompt is required\n",
        "status": 422,
        "invalid_fields": [{"type": "required", "field": "input", "description": "prompt is required"}],
    }
    with pytest.raises(ValidationFailed) as caught:
        run(lambda r: httpx.Response(422, json=body), lambda c: c.create(VERSION, {}))
    assert caught.value.invalid_fields == (body["invalid_fields"][0],)  # type: ignore[index]
    assert str(caught.value).endswith("[input: prompt is required]")


def test_connection_failure_is_a_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransportError, match=r"cannot reach https://proxy\.example/replicate/v1: refused"):
        run(handler, lambda c: c.get("p1"))


def test_non_json_success_is_an_api_error() -> None:
    with pytest.raises(ApiError, match="unexpected answer from the API"):
        run(lambda r: httpx.Response(200, text="oops"), lambda c: c.get("p1"))
