"""The predictions API over loopback HTTP: create, get, list, cancel, Prefer: wait, errors, stats."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kkiai_pipeline.sandbox import Sandbox

from .helpers import AUTH, version_of

SD = version_of("stability-ai/stable-diffusion")
SDXL = version_of("stability-ai/sdxl")
SMALL = {"prompt": "a lamp", "width": 64, "height": 64}
PROBLEM = "application/problem+json"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

Wait = Callable[[httpx.Client, str], dict[str, Any]]


def create(client: httpx.Client, input: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    body = {"version": f"stability-ai/stable-diffusion:{SD}", "input": SMALL if input is None else input}
    return client.post("/predictions", json=body, headers=headers)


def test_create_answers_201_with_a_starting_prediction(api: httpx.Client) -> None:
    response = create(api, {"width": 64, "prompt": "a lamp", "height": 64})
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"[a-z0-9]{26}", body["id"])
    assert (body["model"], body["version"], body["status"]) == (
        "stability-ai/stable-diffusion",
        SD,
        "starting",
    )
    assert list(body["input"]) == ["height", "prompt", "width"]
    assert (body["output"], body["error"], body["logs"], body["data_removed"]) == (None, None, "", False)
    assert RFC3339.match(body["created_at"])
    assert "started_at" not in body and "completed_at" not in body and "metrics" not in body
    upstream = f"https://api.replicate.com/v1/predictions/{body['id']}"
    assert body["urls"] == {
        "get": upstream,
        "cancel": upstream + "/cancel",
        "web": f"https://replicate.com/p/{body['id']}",
    }


def test_a_bare_hash_names_the_version_too(api: httpx.Client) -> None:
    response = api.post(
        "/predictions", json={"version": SDXL, "input": {"prompt": "x", "width": 128, "height": 128}}
    )
    assert response.status_code == 201
    assert response.json()["model"] == "stability-ai/sdxl"


def test_lifecycle_seen_through_get(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.4, predict_seconds=0.4)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False) as client:
        prediction_id = create(client).json()["id"]
        seen = ["starting"]
        deadline = time.monotonic() + 60
        while seen[-1] != "succeeded" and time.monotonic() < deadline:
            body = client.get(f"/predictions/{prediction_id}").json()
            if body["status"] != seen[-1]:
                seen.append(body["status"])
            time.sleep(0.01)
    assert seen == ["starting", "processing", "succeeded"]
    assert RFC3339.match(body["started_at"]) and RFC3339.match(body["completed_at"])
    assert body["created_at"] < body["started_at"] < body["completed_at"]
    assert set(body["metrics"]) == {"predict_time", "total_time", "image_count"}
    assert body["logs"].startswith("Using seed: ")
    assert " 100%|##########| 50/50 [" in body["logs"]


def test_get_returns_the_output_urls(api: httpx.Client, wait_done: Wait, sandbox: Sandbox) -> None:
    prediction_id = create(api, {**SMALL, "num_outputs": 2}).json()["id"]
    body = wait_done(api, prediction_id)
    root = sandbox.base_url.removesuffix("/replicate/v1")
    assert body["output"] == [
        f"{root}/files/{prediction_id}/out-0.png",
        f"{root}/files/{prediction_id}/out-1.png",
    ]
    assert body["metrics"]["image_count"] == 2


def test_prefer_wait_returns_output_with_processing_status(api: httpx.Client, wait_done: Wait) -> None:
    response = create(api, Prefer="wait=30")
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "wait=30"
    body = response.json()
    assert body["status"] == "processing"
    assert len(body["output"]) == 1 and body["output"][0].startswith("http://")
    assert "completed_at" not in body and "metrics" not in body
    assert "started_at" in body
    assert wait_done(api, body["id"])["status"] == "succeeded"


def test_bare_prefer_wait_is_echoed(api: httpx.Client) -> None:
    response = create(api, Prefer="wait")
    assert response.headers["Preference-Applied"] == "wait"
    assert response.json()["output"] is not None


@pytest.mark.parametrize("prefer", ["wait=0", "wait=61", "wait=abc", "respond-async"])
def test_invalid_prefer_is_ignored(api: httpx.Client, prefer: str) -> None:
    response = create(api, Prefer=prefer)
    assert response.status_code == 201
    assert "Preference-Applied" not in response.headers
    assert response.json()["status"] == "starting"


def test_prefer_wait_timeout_reports_starting(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=30.0)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        response = create(client, Prefer="wait=1")
        body = response.json()
        assert response.headers["Preference-Applied"] == "wait=1"
        assert (body["status"], body["output"]) == ("starting", None)
        assert client.get(f"/predictions/{body['id']}").json()["status"] == "processing"


def test_prefer_wait_with_succeeded_final_status(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=0.01, sync_final_status="succeeded")
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        body = create(client, Prefer="wait=30").json()
    assert body["status"] == "succeeded"
    assert "completed_at" in body and body["metrics"]["image_count"] == 1


def test_prefer_wait_with_data_uri_outputs(start_sandbox: Callable[..., Sandbox], wait_done: Wait) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=0.01, data_uri_outputs=True)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        body = create(client, Prefer="wait").json()
        assert body["output"][0].startswith("data:image/png;base64,iVBOR")
        assert create(client).json()["output"] is None  # without Prefer: wait nothing changes
        assert wait_done(client, body["id"])["output"][0].startswith("http://")


def test_prefer_wait_returns_failures_as_failed(api: httpx.Client) -> None:
    body = create(api, {**SMALL, "prompt": "a lamp [sandbox:fail]"}, Prefer="wait=30").json()
    assert body["status"] == "failed"
    assert body["error"] == "E1000 Prediction failed (sandbox: input contained the fail marker)"
    assert body["output"] is None


def test_fail_marker_anywhere_in_the_input(api: httpx.Client, wait_done: Wait) -> None:
    body = create(api, {**SMALL, "negative_prompt": "ugly, [sandbox:fail]"}).json()
    done = wait_done(api, body["id"])
    assert done["status"] == "failed"
    assert done["error"] == "E1000 Prediction failed (sandbox: input contained the fail marker)"
    assert (done["output"], "completed_at" in done, "metrics" in done) == (None, True, True)
    assert done["logs"].endswith(done["error"] + "\n")


def test_custom_fail_marker(start_sandbox: Callable[..., Sandbox], wait_done: Wait) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=0.01, fail_marker="BOOM")
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        assert (
            wait_done(client, create(client, {**SMALL, "prompt": "BOOM"}).json()["id"])["status"] == "failed"
        )
        ok = create(client, {**SMALL, "prompt": "[sandbox:fail]"}).json()
        assert wait_done(client, ok["id"])["status"] == "succeeded"


def test_cancel_a_running_prediction(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=60.0)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False) as client:
        prediction_id = create(client).json()["id"]
        response = client.post(f"/predictions/{prediction_id}/cancel")
        assert response.status_code == 200
        body = response.json()
        assert (body["status"], body["output"], body["logs"]) == ("canceled", None, None)
        assert "completed_at" in body and set(body["metrics"]) == {"predict_time", "total_time"}
        assert client.get(f"/predictions/{prediction_id}").json()["status"] == "canceled"
        assert sandbox.stats()["predictions"]["canceled"] == 1


def test_cancel_after_success_changes_nothing(api: httpx.Client, wait_done: Wait) -> None:
    prediction_id = create(api).json()["id"]
    done = wait_done(api, prediction_id)
    assert api.post(f"/predictions/{prediction_id}/cancel").json() == done


def test_prefer_wait_does_not_block_other_requests(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=60.0)

    async def scenario() -> dict[str, Any]:
        async with httpx.AsyncClient(
            base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=90
        ) as client:
            body = {"version": SD, "input": SMALL}
            waiting = asyncio.create_task(
                client.post("/predictions", json=body, headers={"Prefer": "wait=60"})
            )
            while not (await client.get("/predictions")).json()["results"]:
                await asyncio.sleep(0.01)
            listed = (await client.get("/predictions")).json()["results"][0]
            await client.post(f"/predictions/{listed['id']}/cancel")
            response = await waiting
            return dict(response.json())

    body = asyncio.run(scenario())
    assert body["status"] == "canceled"


def test_list_is_newest_first(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox()
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False) as client:
        ids = [create(client).json()["id"] for _ in range(3)]
        page = client.get("/predictions").json()
    assert (page["next"], page["previous"]) == (None, None)
    assert [p["id"] for p in page["results"]] == ids[::-1]


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer:abc", "Token abc", "Basic abc"])
def test_401_without_a_bearer_token(sandbox: Sandbox, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=sandbox.base_url, headers=headers, trust_env=False) as client:
        for response in [create(client), client.get("/predictions/abc"), client.get("/predictions")]:
            assert response.status_code == 401
            assert response.headers["content-type"] == PROBLEM
            assert response.json() == {
                "title": "Unauthenticated",
                "detail": "You did not pass a valid authentication token",
                "status": 401,
            }


def test_configured_token_must_match(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(token="s3cret")
    with httpx.Client(base_url=sandbox.base_url, trust_env=False) as client:
        assert create(client, Authorization="Bearer wrong").status_code == 401
        assert create(client, Authorization="Bearer s3cret").status_code == 201


def test_404_for_unknown_prediction(api: httpx.Client) -> None:
    for response in [api.get("/predictions/nope"), api.post("/predictions/nope/cancel")]:
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json() == {"detail": "Not found.", "status": 404}


def test_404_for_unknown_paths(api: httpx.Client, sandbox: Sandbox) -> None:
    response = api.post("/models/stability-ai/sdxl/predictions", json={"input": {}})
    assert (response.status_code, response.json()) == (404, {"detail": "Not found.", "status": 404})
    assert sandbox.stats()["requests"]["other"] == 1


@pytest.mark.parametrize(
    "version",
    [
        "stability-ai/sdxl",
        f"stability-ai/sdxl:{SD}",
        "stability-ai/sdxl:latest",
        "0" * 64,
        "someone/else",  # a model outside the catalog is served (generic stand-in) only with its version
        f"someone/else:{SDXL}/x",
        None,
        42,
    ],
)
def test_422_for_unknown_version(api: httpx.Client, version: Any) -> None:
    response = api.post("/predictions", json={"version": version, "input": {"prompt": "x"}})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "title": "Invalid version or not permitted",
        "detail": "The specified version does not exist (or perhaps you don't have permission to use it?)",
        "status": 422,
    }


def test_422_when_input_is_not_an_object(api: httpx.Client) -> None:
    response = api.post("/predictions", json={"version": SD})
    assert response.status_code == 422
    assert response.json() == {
        "title": "Input validation failed",
        "detail": "- input: Invalid type. Expected: object, given: null\n",
        "status": 422,
        "invalid_fields": [
            {
                "type": "invalid_type",
                "field": "input",
                "description": "Invalid type. Expected: object, given: null",
            }
        ],
    }


def test_invalid_input_gets_the_apis_422_with_invalid_fields(api: httpx.Client, sandbox: Sandbox) -> None:
    # A request that slipped past the client's own checks, sent straight to the sandbox.
    response = create(api, {"promt": "a lamp", "width": 500, "scheduler": "EULER"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    fields = [
        {
            "type": "unknown",
            "field": "input.promt",
            "description": "unknown input 'promt'; did you mean 'prompt'? (stability-ai/stable-diffusion accepts: "
            "prompt, negative_prompt, width, height, num_outputs, num_inference_steps, guidance_scale, scheduler, seed)",
        },
        {
            "type": "choice",
            "field": "input.width",
            "description": "width must be one of 64, 128, 192, 256, 320, 384, 448, 512, 576, 640, 704, 768, 832, "
            "896, 960, 1024; got 500; did you mean 512?",
        },
        {
            "type": "choice",
            "field": "input.scheduler",
            "description": "scheduler must be one of DDIM, K_EULER, DPMSolverMultistep, K_EULER_ANCESTRAL, PNDM, "
            "KLMS; got 'EULER'; did you mean 'K_EULER'?",
        },
        {
            "type": "required",
            "field": "input.prompt",
            "description": "prompt is required by stability-ai/stable-diffusion but is missing",
        },
    ]
    assert response.json() == {
        "title": "Input validation failed",
        "detail": "".join(f"- {f['field']}: {f['description']}\n" for f in fields),
        "status": 422,
        "invalid_fields": fields,
    }
    assert sandbox.stats()["predictions"]["total"] == 0


def test_400_for_a_body_that_is_not_a_json_object(api: httpx.Client) -> None:
    response = api.post("/predictions", content=b"[1, 2")
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


def test_stats_count_requests_and_predictions(api: httpx.Client, sandbox: Sandbox, wait_done: Wait) -> None:
    assert sandbox.stats() == {
        "requests": {"create": 0, "get": 0, "cancel": 0, "list": 0, "version": 0, "file": 0, "other": 0},
        "predictions": {
            "total": 0,
            "starting": 0,
            "processing": 0,
            "succeeded": 0,
            "failed": 0,
            "canceled": 0,
            "aborted": 0,
        },
        "faults": {
            "poll_5xx": 0,
            "create_429": 0,
            "drop_before_create": 0,
            "drop_after_create": 0,
            "drop_poll": 0,
            "slow": 0,
            "fail": 0,
            "file_5xx": 0,
            "drop_file": 0,
            "rate_limited": 0,
        },
        "duplicates": 0,
    }
    done = wait_done(api, create(api).json()["id"])
    failing = create(api, {**SMALL, "prompt": "[sandbox:fail]"}).json()["id"]
    wait_done(api, failing)
    api.get("/predictions")
    httpx.get(done["output"][0], trust_env=False)
    api.get(f"/models/stability-ai/sdxl/versions/{SDXL}")
    api.post(f"/predictions/{failing}/cancel")
    stats = sandbox.stats()
    assert stats["predictions"] == {
        "total": 2,
        "starting": 0,
        "processing": 0,
        "succeeded": 1,
        "failed": 1,
        "canceled": 0,
        "aborted": 0,
    }
    assert {k: v for k, v in stats["requests"].items() if k != "get"} == {
        "create": 2,
        "cancel": 1,
        "list": 1,
        "version": 1,
        "file": 1,
        "other": 0,
    }
    assert stats["requests"]["get"] >= 2


def test_stats_and_reset_over_http(api: httpx.Client, sandbox: Sandbox) -> None:
    create(api)
    root = sandbox.base_url.removesuffix("/replicate/v1")
    assert httpx.get(f"{root}/sandbox/stats", trust_env=False).json()["requests"]["create"] == 1
    reset = httpx.post(f"{root}/sandbox/reset", trust_env=False).json()
    assert reset["requests"]["create"] == 0 and reset["predictions"]["total"] == 0
    assert sandbox.stats() == reset
