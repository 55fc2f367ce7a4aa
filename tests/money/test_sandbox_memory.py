"""The offline emulator remembers like the real service (issue 10, failure 6).

Each test runs the real ``kkiai-run ... api=sandbox`` (the emulator starts inside that process and
dies with it) and counts what the emulator saw in its own store, not what the client believes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.money.helpers import SCRIPTS

PRODUCT_SHOTS = ["pipeline=product_shots", "api=sandbox", "progress=false"]


def kkiai_run(tmp_path: Path, run: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / "kkiai-run"), *PRODUCT_SHOTS, f"hydra.run.dir={tmp_path / run}", *args],
        cwd=tmp_path,
        env=_environ(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _environ(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KKIAI_")}
    environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return environ


def sandbox_predictions(tmp_path: Path) -> list[tuple[str, str]]:
    """(version, input) of every prediction the emulator ever made, from its own store."""
    store = tmp_path / "cache" / "kkiai-pipeline" / "sandbox" / "sandbox.sqlite3"
    with sqlite3.connect(store) as db:
        return [(v, i) for v, i in db.execute("SELECT version, input FROM predictions")]


def made_any(tmp_path: Path) -> bool:
    """Whether the emulator has made a prediction yet (its store may still be being created)."""
    try:
        return bool(sandbox_predictions(tmp_path))
    except sqlite3.OperationalError:
        return False


def manifest(tmp_path: Path, run: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / run / "run.json").read_text())
    return data


def test_a_sandbox_run_killed_mid_way_resumes_in_a_new_process_without_paying_twice(tmp_path: Path) -> None:
    slow = ["api.sandbox.predict_seconds=3", "api.wait_seconds=1"]
    first = subprocess.Popen(
        [str(SCRIPTS / "kkiai-run"), *PRODUCT_SHOTS, f"hydra.run.dir={tmp_path / 'run'}", *slow],
        cwd=tmp_path,
        env=_environ(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not made_any(tmp_path):
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # the emulator inside dies with it, its prediction unfinished
    first.communicate(timeout=30)
    assert len(sandbox_predictions(tmp_path)) == 1

    resumed = kkiai_run(tmp_path, "run", *slow, "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    steps = manifest(tmp_path, "run")["steps"]
    assert isinstance(steps, dict)
    assert {sid: s["status"] for sid, s in steps.items()} == dict.fromkeys(steps, "succeeded")
    assert steps["generate"]["obtained"] == "reattached"  # followed by id in a new emulator process
    made = sandbox_predictions(tmp_path)
    assert len(made) == len(set(made)) == 3  # one per step, across both processes


def test_changing_a_downstream_step_after_a_cached_run_hands_on_stored_outputs(tmp_path: Path) -> None:
    first = kkiai_run(tmp_path, "one", "api.sandbox.file_ttl=1")
    assert first.returncode == 0, first.stderr
    time.sleep(1.5)  # the emulator has removed the first run's output files by now
    changed = kkiai_run(
        tmp_path, "two", "api.sandbox.file_ttl=1", "pipeline.steps.cleanup.input.objects_to_remove=car"
    )
    assert changed.returncode == 0, changed.stderr
    steps = manifest(tmp_path, "two")["steps"]
    assert isinstance(steps, dict)
    assert {sid: s["obtained"] for sid, s in steps.items()} == {
        "generate": "reused",
        "cleanup": "created",
        "cutout": "created",
    }
    made = sandbox_predictions(tmp_path)
    assert len(made) == len(set(made)) == 5  # generate once; cleanup and cutout once per variant
