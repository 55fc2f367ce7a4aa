"""Serving: the background thread, the ``kkiai-sandbox`` command, and many predictions in flight."""

from __future__ import annotations

import asyncio
import json
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


# -- request bodies are capped; a token set guards every route -------------------------------------------


def _raw_exchange(sandbox: Sandbox, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send ``head`` and ``body_parts`` on a bare socket, then read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=10) as conn:
        conn.sendall(head)
        for part in body_parts:
            conn.sendall(part)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _create_head(extra: str) -> bytes:
    lines = ["POST /replicate/v1/predictions HTTP/1.1", "Host: x", "Authorization: Bearer test-token"]
    return ("\r\n".join([*lines, "Content-Type: application/json", extra, "", ""])).encode()


def test_a_body_declared_too_large_is_answered_413_without_reading_it(
    start_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = start_sandbox(max_body_bytes=1000)
    # 10 GB announced, 100 bytes sent: the answer comes (and the connection closes) without the rest.
    answer = _raw_exchange(sandbox, _create_head("Content-Length: 10000000000"), [b"{" * 100])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {
        "title": "Payload too large",
        "detail": "The request body is larger than 1000 bytes.",
        "status": 413,
    }
    assert sandbox.stats()["predictions"]["total"] == 0


def test_a_chunked_body_is_refused_once_it_passes_the_cap(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(max_body_bytes=1000)
    chunk = b"320\r\n" + b" " * 800 + b"\r\n"  # 800 bytes; the terminating chunk is never sent
    answer = _raw_exchange(sandbox, _create_head("Transfer-Encoding: chunked"), [chunk, chunk])
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert sandbox.stats()["predictions"]["total"] == 0


def test_a_body_up_to_the_cap_is_served(start_sandbox: Callable[..., Sandbox]) -> None:
    body = json.dumps({"version": SD, "input": TINY}).encode()
    sandbox = start_sandbox(max_body_bytes=len(body), queue_seconds=0.0, predict_seconds=0.01)
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        assert client.post("/predictions", content=body).status_code == 201
        assert client.post("/predictions", content=body + b" ").status_code == 413
    assert SandboxConfig().max_body_bytes == 20 * 1024 * 1024


def test_a_token_set_guards_every_route_but_files(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(token="s3cret-token", queue_seconds=0.0, predict_seconds=0.01)
    good = {"Authorization": "Bearer s3cret-token"}
    root = sandbox.root_url
    with httpx.Client(trust_env=False, timeout=30) as client:
        for method, url in [
            ("POST", root + "/sandbox/reset"),
            ("GET", root + "/sandbox/stats"),
            ("GET", sandbox.base_url + "/predictions"),
            ("GET", root + "/anything"),
        ]:
            assert client.request(method, url).status_code == 401, url
            assert client.request(method, url, headers=AUTH).status_code == 401, url  # a wrong token
        assert client.post(root + "/sandbox/reset", headers=good).status_code == 200
        assert client.get(root + "/sandbox/stats", headers=good).status_code == 200
        assert client.get(root + "/anything", headers=good).status_code == 404
        created = client.post(
            sandbox.base_url + "/predictions",
            json={"version": SD, "input": TINY},
            headers={**good, "Prefer": "wait=30"},
        ).json()
        [url] = created["output"]
        assert client.get(url).status_code == 200  # output files take no token, like the API's file host


def test_without_a_token_set_the_sandbox_routes_take_none(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox()
    assert httpx.post(sandbox.root_url + "/sandbox/reset", trust_env=False).status_code == 200


def test_the_body_cap_is_a_cli_option_and_must_be_positive() -> None:
    assert config_from(build_parser().parse_args(["--max-body-bytes=5"])) == SandboxConfig(max_body_bytes=5)
    with pytest.raises(ValueError, match="max_body_bytes must be at least 1, not 0"):
        SandboxConfig(max_body_bytes=0)
