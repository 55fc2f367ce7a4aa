"""Never waste a paid prediction: cache, timeouts, retries, Ctrl-C, crash and resume, secrets.

Every test runs the real ``kkiai-run`` against a sandbox on loopback and counts what the sandbox saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

from .integration import SCRIPTS, TOKEN, kkiai_run

CHAIN = """
name: chain
steps:
  a:
    model: stability-ai/stable-diffusion
    input: {prompt: "a red cube", width: 128, height: 128}
  b:
    model: stability-ai/stable-diffusion
    input: {prompt: "a blue ball", width: 128, height: 128}
  c:
    model: cjwbw/rembg
    input: {image: "{{ steps.a.output[0] }}"}
  d:
    model: sujaykhandekar/object-removal
    input: {image_path: "{{ steps.b.output[0] }}", objects_to_remove: person}
  e:
    model: cjwbw/rembg
    input: {image: "{{ steps.d.output }}"}
"""


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Any]]:
    started: list[Any] = []
    stack = []

    def start(**config: Any) -> Any:
        context = serve_in_thread(SandboxConfig(**config))
        running = context.__enter__()
        stack.append(context)
        started.append(running)
        return running

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def write(tmp_path: Path, name: str, body: str) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(textwrap.dedent(body))


def api_args(sandbox: Any, *extra: str) -> list[str]:
    return [
        f"api.base_url={sandbox.base_url}",
        "api.poll_interval=0.05",
        "api.max_poll_interval=0.2",
        "api.list_lag_seconds=1",  # the emulator's list shows a prediction at once
        *extra,
    ]


def artifacts_intact(run_dir: Path) -> int:
    """Every recorded artifact exists with its recorded sha256; returns how many there are."""
    import hashlib

    manifest = json.loads((run_dir / "run.json").read_text())
    count = 0
    for step in manifest["steps"].values():
        for artifact in step["outputs"]:
            data = (run_dir / artifact["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
            count += 1
    return count


def test_cache_reuses_unchanged_steps_and_reruns_changed_ones(
    tmp_path: Path, sandbox_factory: Callable[..., Any]
) -> None:
    sandbox = sandbox_factory(queue_seconds=0, predict_seconds=0.02)
    write(tmp_path, "chain", CHAIN)
    cache = f"cache_dir={tmp_path / 'cache'}"

    first = kkiai_run("pipeline=chain", *api_args(sandbox), cache, cwd=tmp_path, run_dir=tmp_path / "r1")
    assert first.code == 0, first.stderr
    assert sandbox.stats()["requests"]["create"] == 5
    assert {s["obtained"] for s in first.manifest["steps"].values()} == {"created"}

    dry = kkiai_run(
        "pipeline=chain", "dry_run=true", *api_args(sandbox), cache, cwd=tmp_path, run_dir=tmp_path / "d"
    )
    assert "5 steps: would create 0 predictions, 5 reused." in dry.stdout
    assert dry.stdout.count("    cache hit: prediction ") == 5

    second = kkiai_run("pipeline=chain", *api_args(sandbox), cache, cwd=tmp_path, run_dir=tmp_path / "r2")
    assert second.code == 0, second.stderr
    assert sandbox.stats()["requests"]["create"] == 5  # nothing new was created
    assert {s["obtained"] for s in second.manifest["steps"].values()} == {"reused"}
    assert artifacts_intact(second.run_dir) == 5
    sha = {sid: [o["sha256"] for o in s["outputs"]] for sid, s in second.manifest["steps"].items()}
    assert sha == {sid: [o["sha256"] for o in s["outputs"]] for sid, s in first.manifest["steps"].items()}

    change = "pipeline.steps.b.input.prompt=a green ball"
    dry = kkiai_run(
        "pipeline=chain",
        "dry_run=true",
        *api_args(sandbox),
        cache,
        change,
        cwd=tmp_path,
        run_dir=tmp_path / "d2",
    )
    assert "5 steps: would create 3 predictions, 2 reused." in dry.stdout
    assert "    cache miss: it reads b, which will run first" in dry.stdout
    third = kkiai_run(
        "pipeline=chain", *api_args(sandbox), cache, change, cwd=tmp_path, run_dir=tmp_path / "r3"
    )
    assert third.code == 0, third.stderr
    assert sandbox.stats()["requests"]["create"] == 8  # b, d and e ran again; a and c came from the cache
    assert {sid: s["obtained"] for sid, s in third.manifest["steps"].items()} == {
        "a": "reused",
        "b": "created",
        "c": "reused",
        "d": "created",
        "e": "created",
    }

    off = kkiai_run(
        "pipeline=chain", *api_args(sandbox), cache, "cache=false", cwd=tmp_path, run_dir=tmp_path / "r4"
    )
    assert off.code == 0
    assert sandbox.stats()["requests"]["create"] == 13
    step_off = kkiai_run(
        "pipeline=chain",
        *api_args(sandbox),
        cache,
        "+pipeline.steps.a.cache=false",
        cwd=tmp_path,
        run_dir=tmp_path / "r5",
    )
    assert step_off.code == 0
    assert sandbox.stats()["requests"]["create"] == 14  # only a ran; c's input (a's output) is unchanged


def test_a_step_past_its_timeout_is_canceled(tmp_path: Path, sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(queue_seconds=0, predict_seconds=60)
    write(
        tmp_path,
        "slow",
        """
        name: slow
        steps:
          slow:
            model: stability-ai/stable-diffusion
            input: {prompt: "a slow painting", width: 128, height: 128}
            timeout: 0.5
        """,
    )
    result = kkiai_run("pipeline=slow", *api_args(sandbox, "api.wait_seconds=0"), cwd=tmp_path)
    assert result.code == 1
    step = result.manifest["steps"]["slow"]
    assert step["status"] == "canceled"
    assert step["error"] == "canceled after the step's timeout of 0.5 s"
    prediction = httpx.get(
        f"{sandbox.base_url}/predictions/{step['prediction_id']}", headers={"Authorization": "Bearer x"}
    ).json()
    assert prediction["status"] == "canceled"


def test_retries_rerun_failed_predictions_and_record_every_attempt(
    tmp_path: Path, sandbox_factory: Callable[..., Any]
) -> None:
    sandbox = sandbox_factory(queue_seconds=0, predict_seconds=0.01)
    write(
        tmp_path,
        "flaky",
        """
        name: flaky
        steps:
          flaky:
            model: stability-ai/stable-diffusion
            input: {prompt: "always fails [sandbox:fail]", width: 128, height: 128}
            retries: 2
        """,
    )
    result = kkiai_run("pipeline=flaky", *api_args(sandbox), cwd=tmp_path)
    assert result.code == 1
    step = result.manifest["steps"]["flaky"]
    assert [a["status"] for a in step["attempts"]] == ["failed"] * 3
    assert len({a["prediction_id"] for a in step["attempts"]}) == 3
    assert sandbox.stats()["requests"]["create"] == 3
    assert "to resume this run: " in result.stderr


def test_the_token_never_leaks_even_when_a_step_fails(
    tmp_path: Path, sandbox_factory: Callable[..., Any]
) -> None:
    sandbox = sandbox_factory(queue_seconds=0, predict_seconds=0.01)
    write(
        tmp_path,
        "leaky",
        """
        name: leaky
        steps:
          ok: {model: stability-ai/stable-diffusion, input: {prompt: "fine", width: 128, height: 128}}
          bad: {model: stability-ai/stable-diffusion, input: {prompt: "x [sandbox:fail]", width: 128, height: 128}}
        """,
    )
    result = kkiai_run("pipeline=leaky", *api_args(sandbox), "progress=true", cwd=tmp_path)
    assert result.code == 1
    assert "1/2" in result.stderr or "2/2" in result.stderr  # the progress bar was shown
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "run.log" for p in written) and any(p.parent.name == ".hydra" for p in written)
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in result.stdout + result.stderr


def start_run(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KKIAI_")}
    environ["KKIAI_API_TOKEN"] = TOKEN
    command = [str(SCRIPTS / "kkiai-run"), *args, "progress=false", f"hydra.run.dir={tmp_path / 'run'}"]
    command.append(f"cache_dir={tmp_path / 'cache'}")
    return subprocess.Popen(
        command, cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition: Callable[[], bool], *, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def manifest(tmp_path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((tmp_path / "run" / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def test_ctrl_c_cancels_every_running_prediction(tmp_path: Path, sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(queue_seconds=0.2, predict_seconds=60)
    write(tmp_path, "chain", CHAIN)
    # wait_seconds=2: the creates are still in flight when Ctrl-C comes; their answers must be awaited
    run = start_run(tmp_path, "pipeline=chain", *api_args(sandbox, "api.wait_seconds=2"))
    wait_until(lambda: sandbox.stats()["requests"]["create"] == 2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    data = manifest(tmp_path)
    assert data["status"] == "canceled"
    steps = data["steps"]
    assert {sid: s["status"] for sid, s in steps.items()} == {
        "a": "canceled",
        "b": "canceled",
        "c": "pending",
        "d": "pending",
        "e": "pending",
    }
    headers = {"Authorization": "Bearer x"}
    for sid in ("a", "b"):
        remote = httpx.get(
            f"{sandbox.base_url}/predictions/{steps[sid]['prediction_id']}", headers=headers
        ).json()
        assert remote["status"] == "canceled"
    assert sandbox.stats()["requests"]["cancel"] == 2
    assert "interrupted: canceling running predictions" in stderr
    assert f"hydra.run.dir={tmp_path / 'run'} resume=true" in stderr


def test_sigkill_then_resume_never_creates_twice(tmp_path: Path, sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(queue_seconds=0.1, predict_seconds=1.0)
    write(tmp_path, "chain", CHAIN)
    args = ["pipeline=chain", *api_args(sandbox, "api.wait_seconds=1")]
    run = start_run(tmp_path, *args)
    wait_until(lambda: sandbox.stats()["requests"]["create"] >= 3)
    run.kill()
    run.communicate(timeout=30)
    assert manifest(tmp_path)["status"] == "running"

    resumed = start_run(tmp_path, *args, "resume=true")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    data = manifest(tmp_path)
    assert data["status"] == "succeeded"
    assert sandbox.stats()["requests"]["create"] == 5  # one per step, across both processes
    assert sandbox.stats().get("duplicates", 0) == 0
    assert artifacts_intact(tmp_path / "run") == 5
