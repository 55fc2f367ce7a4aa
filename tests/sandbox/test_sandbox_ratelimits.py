"""Rate-limit headers on every API response, the per-minute windows, and enforcing them with 429."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from kkiai_pipeline.sandbox import Sandbox
from kkiai_pipeline.sandbox.ratelimits import RateLimiter

from .helpers import AUTH, version_of

SD = version_of("stability-ai/stable-diffusion")
SDXL = version_of("stability-ai/sdxl")
SMALL = {"prompt": "a lamp", "width": 64, "height": 64}

Start = Callable[..., Sandbox]
Wait = Callable[[httpx.Client, str], dict[str, object]]


def limits(response: httpx.Response) -> tuple[str, str] | None:
    if "ratelimit-remaining" not in response.headers:
        return None
    return response.headers["ratelimit-remaining"], response.headers["ratelimit-reset"]


def create(client: httpx.Client) -> httpx.Response:
    return client.post("/predictions", json={"version": SD, "input": SMALL})


def test_every_api_response_reports_its_bucket(api: httpx.Client, sandbox: Sandbox, wait_done: Wait) -> None:
    created = create(api)
    assert limits(created) == ("599", "60")
    assert (limits(create(api)) or ("",))[0] == "598"
    prediction_id = created.json()["id"]
    answers = [
        api.get(f"/predictions/{prediction_id}"),
        api.get("/predictions"),
        api.get(f"/models/stability-ai/sdxl/versions/{SDXL}"),
        api.get("/predictions/nope"),
        api.post("/predictions/nope/cancel"),
        api.get("/somewhere/else"),
        httpx.get(sandbox.base_url + "/predictions", trust_env=False),  # 401
    ]
    assert [response.status_code for response in answers] == [200, 200, 200, 404, 404, 404, 401]
    remaining = [limits(response) for response in answers]
    assert [r[0] if r else None for r in remaining] == [
        "2999",
        "2998",
        "2997",
        "2996",
        "2995",
        "2994",
        "2993",
    ]
    assert all(r is not None and 0 <= int(r[1]) <= 60 for r in remaining), (
        remaining
    )  # flaky under load: see note
    assert limits(api.post("/predictions", json={"version": "nope", "input": {}})) is not None  # a 422 too


def test_files_and_sandbox_routes_carry_no_rate_limits(
    api: httpx.Client, sandbox: Sandbox, wait_done: Wait
) -> None:
    done = wait_done(api, create(api).json()["id"])
    output = done["output"]
    assert isinstance(output, list)
    assert limits(httpx.get(output[0], trust_env=False)) is None
    root = sandbox.base_url.removesuffix("/replicate/v1")
    assert limits(httpx.get(root + "/sandbox/stats", trust_env=False)) is None


def test_over_the_limit_is_only_reported_by_default(start_sandbox: Start) -> None:
    sandbox = start_sandbox(create_rate_per_minute=2)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False) as client:
        answers = [create(client) for _ in range(3)]
    assert [r.status_code for r in answers] == [201, 201, 201]
    assert [(limits(r) or ("", ""))[0] for r in answers] == ["1", "0", "0"]
    assert sandbox.stats()["faults"]["rate_limited"] == 0


def test_enforced_limits_answer_the_apis_429(start_sandbox: Start) -> None:
    sandbox = start_sandbox(create_rate_per_minute=2, other_rate_per_minute=3, enforce_rate_limits=True)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False) as client:
        creates = [create(client) for _ in range(3)]
        gets = [client.get("/predictions") for _ in range(4)]
    assert [r.status_code for r in creates] == [201, 201, 429]
    assert [r.status_code for r in gets] == [200, 200, 200, 429]
    for throttled in (creates[-1], gets[-1]):
        assert throttled.headers["content-type"] == "application/problem+json"
        remaining, reset = limits(throttled) or ("", "")
        assert remaining == "0" and 1 <= int(reset) <= 60
        assert throttled.json() == {
            "detail": f"Request was throttled. Your rate limit resets in ~{reset}s.",
            "status": 429,
            "retry_after": int(reset),
        }
        assert "retry-after" not in throttled.headers  # the API was never seen sending one
    stats = sandbox.stats()
    assert (stats["predictions"]["total"], stats["requests"]["create"]) == (2, 3)
    assert stats["faults"]["rate_limited"] == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_windows_last_a_minute_from_their_first_call() -> None:
    clock = FakeClock()
    limiter = RateLimiter(create_per_minute=2, other_per_minute=5, clock=clock)
    first = limiter.take("create")
    assert (first.remaining, first.reset, first.exceeded) == (1, 60, False)
    clock.now += 59.5
    assert limiter.take("create").reset == 1
    assert limiter.take("create").exceeded
    assert limiter.take("other").remaining == 4  # a bucket of its own
    clock.now += 0.5
    fresh = limiter.take("create")
    assert (fresh.remaining, fresh.reset, fresh.exceeded) == (1, 60, False)
    limiter.reset()
    assert limiter.take("other").remaining == 4


def test_a_throttled_big_create_still_gets_its_answer(start_sandbox: Start) -> None:
    # The 429 is sent after the whole body is read: a close with unread data would be a reset instead.
    sandbox = start_sandbox(create_rate_per_minute=1, enforce_rate_limits=True)
    big = {"version": SD, "input": {"prompt": "x" * 2_000_000}}
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        assert create(client).status_code == 201
        assert [client.post("/predictions", json=big).status_code for _ in range(3)] == [429] * 3
