"""Serving: the background thread, the ``kkiai-sandbox`` command, and many predictions in flight."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kkiai_pipeline.sandbox import Sandbox, SandboxConfig, serve_in_thread
from kkiai_pipeline.sandbox.cli import build_parser, config_from, main

from .helpers import AUTH, version_of

SD = version_of("stability-ai/stable-diffusion")
TINY = {"prompt": "a lamp", "width": 64, "height": 64}


def test_serve_in_thread_binds_loopback_and_stops() -> None:
    with serve_in_thread(SandboxConfig()) as sandbox:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/replicate/v1", sandbox.base_url)
        assert sandbox.port > 0
        response = httpx.get(sandbox.base_url + "/predictions", headers=AUTH, trust_env=False)
        assert response.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(sandbox.base_url + "/predictions", headers=AUTH, trust_env=False)
    assert sandbox.stats()["requests"]["list"] == 1  # still readable once stopped


def test_stopping_answers_pending_waits() -> None:
    answers: list[httpx.Response | Exception] = []

    def wait_for_prediction(base_url: str) -> None:
        body = {"version": SD, "input": TINY}
        headers = {**AUTH, "Prefer": "wait=60"}
        try:
            answers.append(httpx.post(base_url + "/predictions", json=body, headers=headers, trust_env=False))
        except httpx.HTTPError as exc:
            answers.append(exc)

    with serve_in_thread(SandboxConfig(queue_seconds=0.0, predict_seconds=600.0)) as sandbox:
        waiter = threading.Thread(target=wait_for_prediction, args=(sandbox.base_url,))
        waiter.start()
        while sandbox.stats()["predictions"]["total"] == 0:
            time.sleep(0.01)
    waiter.join(timeout=60)
    [answer] = answers
    assert isinstance(answer, httpx.Response)
    assert (answer.status_code, answer.json()["status"]) == (201, "starting")


def test_serve_in_thread_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError), serve_in_thread(SandboxConfig(port=busy.getsockname()[1])):
            pass


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        SandboxConfig(predict_seconds=-1)
    with pytest.raises(ValueError, match="sync_final_status"):
        SandboxConfig(sync_final_status="done")  # type: ignore[arg-type]


def test_cli_options_map_to_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--port=0",
            "--queue-seconds=0.1",
            "--predict-seconds=0.5",
            "--token=t",
            "--fail-marker=X",
            "--sync-final-status=succeeded",
            "--data-uri-outputs",
            "--workers=2",
        ]
    )
    assert config_from(args) == SandboxConfig(
        port=0,
        queue_seconds=0.1,
        predict_seconds=0.5,
        token="t",
        fail_marker="X",
        sync_final_status="succeeded",
        data_uri_outputs=True,
        workers=2,
    )
    assert config_from(build_parser().parse_args([])) == SandboxConfig()


def test_config_rejects_bad_fault_settings() -> None:
    with pytest.raises(ValueError, match=r"poll_5xx_rate must be between 0 and 1, not 1\.5"):
        SandboxConfig(poll_5xx_rate=1.5)
    with pytest.raises(ValueError, match=r"drop_file_rate must be between 0 and 1, not -0\.1"):
        SandboxConfig(drop_file_rate=-0.1)
    with pytest.raises(ValueError, match="retry_after_seconds must be at least 1"):
        SandboxConfig(retry_after_seconds=0)
    with pytest.raises(ValueError, match="slow_seconds and min_cancel_after_seconds must not be negative"):
        SandboxConfig(slow_seconds=-1)
    with pytest.raises(
        ValueError, match="create_rate_per_minute and other_rate_per_minute must be at least 1"
    ):
        SandboxConfig(other_rate_per_minute=0)


def test_cli_fault_and_limit_options_map_to_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--fault-seed=7",
            "--poll-5xx-rate=0.1",
            "--create-429-rate=0.2",
            "--retry-after-seconds=3",
            "--drop-before-create-rate=0.3",
            "--drop-after-create-rate=0.4",
            "--drop-poll-rate=0.5",
            "--slow-rate=0.6",
            "--slow-seconds=1.5",
            "--fail-rate=0.7",
            "--file-5xx-rate=0.8",
            "--drop-file-rate=0.9",
            "--create-rate-per-minute=10",
            "--other-rate-per-minute=20",
            "--enforce-rate-limits",
            "--min-cancel-after-seconds=0.5",
        ]
    )
    assert config_from(args) == SandboxConfig(
        fault_seed=7,
        poll_5xx_rate=0.1,
        create_429_rate=0.2,
        retry_after_seconds=3,
        drop_before_create_rate=0.3,
        drop_after_create_rate=0.4,
        drop_poll_rate=0.5,
        slow_rate=0.6,
        slow_seconds=1.5,
        fail_rate=0.7,
        file_5xx_rate=0.8,
        drop_file_rate=0.9,
        create_rate_per_minute=10,
        other_rate_per_minute=20,
        enforce_rate_limits=True,
        min_cancel_after_seconds=0.5,
    )


def test_cli_rejects_a_bad_rate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--fail-rate", "2"])
    assert caught.value.code == 2
    assert "fail_rate must be between 0 and 1, not 2.0" in capsys.readouterr().err


def test_cli_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--port", "70000"])
    assert caught.value.code == 2
    assert "port must be between 0 and 65535" in capsys.readouterr().err


def test_cli_serves_until_interrupted() -> None:
    command = [sys.executable, "-m", "kkiai_pipeline.sandbox.cli", "--port", "0", "--predict-seconds", "0.01"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/replicate/v1)", line)
        assert match, line
        base_url = match[1]
        body = {"version": SD, "input": TINY}
        headers = {**AUTH, "Prefer": "wait"}
        response = httpx.post(
            base_url + "/predictions", json=body, headers=headers, trust_env=False, timeout=30
        )
        assert response.status_code == 201
        assert response.json()["output"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_thousands_in_flight(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.0, predict_seconds=2.0)
    count = 1000
    body = {"version": SD, "input": TINY}
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=60) as client:
        ids = [client.post("/predictions", json=body).json()["id"] for _ in range(count)]
        assert client.get(f"/predictions/{ids[0]}").status_code == 200
    assert len(set(ids)) == count
    in_flight = sandbox.stats()["predictions"]
    assert in_flight["total"] == count and in_flight["processing"] > 0
    deadline = time.monotonic() + 120
    while sandbox.stats()["predictions"]["succeeded"] < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.stats()["predictions"]["succeeded"] == count


def test_many_concurrent_prefer_waits(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(queue_seconds=0.05, predict_seconds=0.3)
    count = 100

    async def create_all() -> list[dict[str, Any]]:
        headers = {**AUTH, "Prefer": "wait=60"}
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(
            base_url=sandbox.base_url, headers=headers, trust_env=False, limits=limits, timeout=90
        ) as client:
            body = {"version": SD, "input": TINY}
            responses = await asyncio.gather(*(client.post("/predictions", json=body) for _ in range(count)))
            return [r.json() for r in responses]

    bodies = asyncio.run(create_all())
    assert {(b["status"], len(b["output"])) for b in bodies} == {("processing", 1)}
    assert sandbox.stats()["predictions"]["succeeded"] == count
