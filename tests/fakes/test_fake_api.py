"""The fake API itself, driven with plain httpx: each knob does what it says, and everything is counted."""

from __future__ import annotations

import email.utils
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from .fake_api import TOKEN, Answer, Ask, FakeApi, canonical, json_answer

SDXL = "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
REMBG = "cjwbw/rembg:fb8af171cfa1616ddcf1242c093f9c46bcada5ad4cf6f2fbe8b81b330ec5c003"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    with FakeApi() as server:
        server.knobs.predict_seconds = 0.1
        yield server


@pytest.fixture
def api(fake: FakeApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, headers=AUTH, trust_env=False, timeout=10) as client:
        yield client


def create(
    api: httpx.Client, prompt: str = "a mug", *, version: str = SDXL, **headers: str
) -> httpx.Response:
    return api.post("/predictions", json={"version": version, "input": {"prompt": prompt}}, headers=headers)


def wait_done(api: httpx.Client, prediction_id: str) -> dict[str, Any]:
    for _ in range(500):
        body: dict[str, Any] = api.get(f"/predictions/{prediction_id}").json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"prediction {prediction_id} never finished")


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_prediction_is_created_polled_to_success_and_its_files_served(
    fake: FakeApi, api: httpx.Client
) -> None:
    answer = create(api)
    assert answer.status_code == 201
    body = answer.json()
    assert re.fullmatch(r"[a-z0-9]{26}", body["id"])
    assert body["status"] == "starting" and body["output"] is None
    assert body["model"] == "stability-ai/sdxl" and body["version"] == SDXL.split(":")[1]
    assert body["urls"]["get"] == f"{fake.base_url}/predictions/{body['id']}"
    assert abs(timestamp(body["created_at"]) - time.time()) < 5
    done = wait_done(api, body["id"])
    assert done["status"] == "succeeded" and done["data_removed"] is False
    assert done["output"] == [f"{fake.origin}/files/{body['id']}/0.png"]
    assert timestamp(done["created_at"]) <= timestamp(done["started_at"]) <= timestamp(done["completed_at"])
    first = httpx.get(done["output"][0])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(PNG_MAGIC)
    again = wait_done(api, create(api).json()["id"])  # the same input draws the same picture
    assert httpx.get(again["output"][0]).content == first.content
    counters = fake.counters
    assert (counters.creates, counters.file_gets, counters.file_gets_with_auth) == (2, 2, 0)
    assert counters.by_input[(SDXL.split(":")[1], canonical({"prompt": "a mug"}))] == 2
    assert counters.duplicates() == 1


def test_prefer_wait_holds_the_answer_until_the_prediction_is_terminal(
    fake: FakeApi, api: httpx.Client
) -> None:
    body = create(api, Prefer="wait=5").json()
    assert body["status"] == "succeeded" and len(body["output"]) == 1
    fake.knobs.predict_seconds = 5
    assert create(api, "slow", Prefer="wait=1").json()["status"] == "processing"


def test_single_file_models_answer_one_url_and_num_outputs_counts(fake: FakeApi, api: httpx.Client) -> None:
    cut = wait_done(api, create(api, version=REMBG).json()["id"])
    assert cut["output"] == f"{fake.origin}/files/{cut['id']}/0.png"
    made = api.post("/predictions", json={"version": SDXL, "input": {"prompt": "x", "num_outputs": 3}})
    assert len(wait_done(api, made.json()["id"])["output"]) == 3


def test_bad_token_and_unknown_version_are_rejected_and_make_nothing(
    fake: FakeApi, api: httpx.Client
) -> None:
    denied = httpx.post(f"{fake.base_url}/predictions", json={"version": SDXL, "input": {}})
    assert denied.status_code == 401 and denied.json()["title"] == "Unauthenticated"
    unknown = create(api, version="someone/model:" + "0" * 64)
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert (fake.counters.creates, fake.counters.rejected) == (0, 2)


def test_a_500_after_creating_still_made_the_prediction(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.creates_500 = 1
    assert create(api).status_code == 500
    assert create(api).status_code == 201  # only the next N
    assert fake.counters.creates == 2 and len(fake.prediction_ids()) == 2


def test_a_dropped_connection_after_creating_answers_nothing(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.creates_dropped = 1
    with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected without sending a response"):
        create(api)
    assert fake.counters.creates == 1
    assert create(api).status_code == 201


def test_malformed_2xx_create_answers(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.creates_truncated = fake.knobs.creates_html = fake.knobs.creates_without_id = 1
    truncated = create(api, "a")
    assert truncated.status_code == 201
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    html = create(api, "b")
    assert html.status_code == 200 and html.headers["content-type"] == "text/html"
    assert html.text.startswith("<html>")
    without_id = create(api, "c")
    assert without_id.status_code == 201 and "id" not in without_id.json()
    assert without_id.json()["status"] == "starting"
    assert fake.counters.creates == 3


def test_clock_skew_moves_created_at_and_the_date_header(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.clock_skew = -120
    answer = create(api)
    behind = time.time() - timestamp(answer.json()["created_at"])
    assert 115 < behind < 125
    date = email.utils.parsedate_to_datetime(answer.headers["date"]).timestamp()
    assert 115 < time.time() - date < 125
    assert api.get("/predictions/nope").headers["date"]  # every answer carries one


def test_a_lagging_list_shows_a_prediction_only_after_the_lag(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.list_lag = 0.5
    made = create(api).json()
    assert api.get("/predictions").json()["results"] == []
    time.sleep(0.6)
    results = api.get("/predictions").json()["results"]
    assert [r["id"] for r in results] == [made["id"]]
    assert results[0]["input"] == {"prompt": "a mug"}
    assert fake.counters.lists == 2


def test_no_list_answers_the_configured_error(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.list_status = 404
    answer = api.get("/predictions")
    assert answer.status_code == 404 and answer.json()["status"] == 404


def test_the_list_pages_newest_first_and_filters_by_creation_time(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.page_size = 2
    ids = [create(api, f"p{n}").json()["id"] for n in range(5)]
    seen: list[str] = []
    params: dict[str, str] = {}
    for _ in range(5):
        page = api.get("/predictions", params=params).json()
        seen += [r["id"] for r in page["results"]]
        if page["next"] is None:
            break
        params = {"cursor": httpx.URL(page["next"]).params["cursor"]}
    assert seen == ids[::-1]
    future = datetime.fromtimestamp(time.time() + 60).astimezone().isoformat()
    assert api.get("/predictions", params={"created_after": future}).json()["results"] == []


def test_file_downloads_fail_for_the_next_n_tries_or_always(fake: FakeApi, api: httpx.Client) -> None:
    url = wait_done(api, create(api).json()["id"])["output"][0]
    fake.knobs.file_failures = 2
    assert [httpx.get(url).status_code for _ in range(3)] == [500, 500, 200]
    fake.knobs.file_failures, fake.knobs.file_failure_status = -1, 404
    assert [httpx.get(url).status_code for _ in range(3)] == [404, 404, 404]
    assert httpx.get(url, headers=AUTH).status_code == 404
    assert (fake.counters.file_gets, fake.counters.file_gets_with_auth) == (7, 1)


def test_data_is_removed_after_its_ttl(fake: FakeApi, api: httpx.Client) -> None:
    done = wait_done(api, create(api).json()["id"])
    fake.knobs.data_ttl = 0
    gone = api.get(f"/predictions/{done['id']}").json()
    assert (gone["status"], gone["output"], gone["data_removed"]) == ("succeeded", None, True)
    assert httpx.get(done["output"][0]).status_code == 404


def test_failing_predictions_by_marker_and_for_the_next_n(fake: FakeApi, api: httpx.Client) -> None:
    marked = wait_done(api, create(api, "a mug [fail]").json()["id"])
    assert (marked["status"], marked["output"]) == ("failed", None)
    assert marked["error"] == "E1000: the model failed"
    fake.knobs.fail_next = 1
    assert wait_done(api, create(api).json()["id"])["status"] == "failed"
    assert wait_done(api, create(api).json()["id"])["status"] == "succeeded"


def test_cancel_and_cancel_after(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.predict_seconds = 30
    prediction_id = create(api).json()["id"]
    canceled = api.post(f"/predictions/{prediction_id}/cancel").json()
    assert canceled["status"] == "canceled" and "completed_at" in canceled
    assert fake.counters.cancels == 1 and fake.counters.canceled_ids == [prediction_id]
    deadline = wait_done(api, create(api, **{"Cancel-After": "1s"}).json()["id"])
    assert deadline["status"] == "canceled"
    assert api.post("/predictions/nope/cancel").status_code == 404


def test_per_model_predict_seconds(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.predict_seconds_for = {"cjwbw/rembg": 30}
    assert create(api, Prefer="wait=5").json()["status"] == "succeeded"
    assert create(api, version=REMBG, Prefer="wait=1").json()["status"] == "processing"


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_kill_hook_kills_the_process_at_request_k(fake: FakeApi, api: httpx.Client, when: str) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hook = fake.arm_kill(victim.pid, at=2, when=when)  # type: ignore[arg-type]
        assert create(api, "first").status_code == 201
        assert victim.poll() is None and not hook.fired
        if when == "before":  # the create still takes effect; its answer is never sent
            with pytest.raises(httpx.RemoteProtocolError):
                create(api, "second")
        else:
            assert create(api, "second").status_code == 201
        assert victim.wait(5) == -9 and hook.fired
        assert fake.counters.creates == 2
    finally:
        victim.kill()
        victim.wait()


def test_a_rewrite_replaces_a_route_s_answer_after_the_request_took_effect(
    fake: FakeApi, api: httpx.Client
) -> None:
    seen: list[Ask] = []

    def hostile(ask: Ask) -> Answer | None:
        seen.append(ask)
        return Answer(status=201, reason=b"Made", body=b'{"id": "../x"}', headers=[("x-evil", "1")])

    fake.knobs.rewrite = {"create": hostile}
    answer = create(api)
    assert (answer.status_code, answer.reason_phrase, answer.json()) == (201, "Made", {"id": "../x"})
    assert answer.headers["x-evil"] == "1"
    assert fake.counters.creates == 1 and fake.counters.rewritten == 1  # made, then answered badly
    [ask] = seen
    assert (ask.route, ask.path, ask.model, ask.number) == (
        "create",
        "/v1/predictions",
        "stability-ai/sdxl",
        1,
    )
    assert ask.view is not None and ask.view["status"] == "starting"
    fake.knobs.rewrite = {"get": lambda ask: json_answer({"status": "odd"}) if ask.number == 1 else None}
    [prediction_id] = fake.prediction_ids()
    assert api.get(f"/predictions/{prediction_id}").json() == {"status": "odd"}
    assert api.get(f"/predictions/{prediction_id}").json()["id"] == prediction_id


def test_a_trickled_answer_with_a_lying_length(fake: FakeApi, api: httpx.Client) -> None:
    fake.knobs.rewrite = {"list": lambda ask: Answer(body=b"{}", content_length=10, trickle=0.01)}
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/predictions")


def test_requests_outside_the_api_are_counted_as_stray(fake: FakeApi, api: httpx.Client) -> None:
    assert api.get(f"{fake.origin}/admin/users").status_code == 404
    assert (fake.counters.stray, fake.counters.stray_with_auth, fake.counters.stray_paths) == (
        1,
        1,
        ["/admin/users"],
    )


def test_model_versions_of_its_extra_models(fake: FakeApi, api: httpx.Client) -> None:
    schema = {"components": {"schemas": {"Input": {"properties": {}}}}}
    fake.knobs.versions = {"ab12": ("someone/tiles", schema)}
    found = api.get("/models/someone/tiles/versions/ab12")
    assert (found.status_code, found.json()["id"], found.json()["openapi_schema"]) == (200, "ab12", schema)
    assert api.get("/models/someone/other/versions/ab12").status_code == 404
    assert (
        httpx.get(f"{fake.base_url}/models/someone/tiles/versions/ab12", trust_env=False).status_code == 401
    )
    created = api.post("/predictions", json={"version": "someone/tiles:ab12", "input": {}})
    assert (created.status_code, fake.counters.version_gets, fake.counters.stray) == (201, 3, 0)
