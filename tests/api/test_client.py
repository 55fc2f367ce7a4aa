from __future__ import annotations

import json

import httpx
import pytest

from kkiai_pipeline.api.client import PredictionsClient
from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.errors import AmbiguousCreateError, ApiError, TransportError, ValidationFailed

from .helpers import BASE, VERSION, call, prediction


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

    async def go(client: PredictionsClient) -> Prediction:
        created = await client.create(VERSION, {"prompt": "x"})
        return await client.wait(created)

    final = call(handler, go)
    assert final.status == "succeeded"
    assert final.output == ["https://files.example/o.png"]
    create = seen[0]
    assert str(create.url) == f"{BASE}/predictions"
    assert json.loads(create.content) == {"version": VERSION, "input": {"prompt": "x"}}
    assert create.headers["Prefer"] == "wait=5"
    assert create.headers["Authorization"] == "Bearer secret-token"
    assert "Cancel-After" not in create.headers
    assert [str(r.url) for r in seen[1:]] == [f"{BASE}/predictions/p1"] * 2


def test_cancel_uses_the_cancel_path() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, str(request.url)) == ("POST", f"{BASE}/predictions/p1/cancel")
        return httpx.Response(200, json=prediction("canceled", logs=None))

    final = call(handler, lambda c: c.cancel("p1"))
    assert final.status == "canceled"
    assert final.logs is None


def test_vendor_example_body_is_a_finished_prediction() -> None:
    body = {"created": 1589478378, "data": [{"url": "https://a/1.png"}, {"url": "https://a/2.png"}]}
    final = call(lambda r: httpx.Response(200, json=body), lambda c: c.create(VERSION, {}))
    assert final.status == "succeeded"
    assert final.terminal
    assert final.output == ["https://a/1.png", "https://a/2.png"]
    assert final.created_at == "2020-05-14T17:46:18Z"


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
    ],
)
def test_error_responses_become_clear_messages(status: int, body: object, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})

    with pytest.raises(ApiError) as caught:
        call(handler, lambda c: c.create(VERSION, {}))
    assert str(caught.value) == message
    assert caught.value.status_code == status
    assert "secret-token" not in str(caught.value)


def test_html_error_page_after_the_last_attempt() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(ApiError) as caught:
        call(handler, lambda c: c.get("p1"))
    assert str(caught.value) == (
        "the API answered 502 to GET /replicate/v1/predictions/p1: Bad Gateway (gave up after 8 attempts)"
    )
    assert caught.value.status_code == 502


def test_5xx_html_page_on_create_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(AmbiguousCreateError) as caught:
        call(handler, lambda c: c.create(VERSION, {}))
    assert caught.value.status_code == 502
    assert "secret-token" not in str(caught.value)


def test_422_lists_invalid_fields() -> None:
    body = {
        "title": "Input validation failed",
        "detail": "- input: prompt is required\n",
        "status": 422,
        "invalid_fields": [{"type": "required", "field": "input", "description": "prompt is required"}],
    }
    with pytest.raises(ValidationFailed) as caught:
        call(lambda r: httpx.Response(422, json=body), lambda c: c.create(VERSION, {}))
    assert caught.value.invalid_fields == (body["invalid_fields"][0],)  # type: ignore[index]
    assert str(caught.value).endswith("[input: prompt is required]")


def test_connection_failure_is_a_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransportError) as caught:
        call(handler, lambda c: c.get("p1"))
    assert str(caught.value) == (
        "cannot reach https://proxy.example/replicate/v1: refused (gave up after 8 attempts)"
    )
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_non_json_success_is_an_api_error() -> None:
    with pytest.raises(ApiError, match="unexpected answer from the API"):
        call(lambda r: httpx.Response(200, text="oops"), lambda c: c.get("p1"))
