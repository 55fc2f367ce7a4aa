"""Pipelines run under each fault the sandbox can inject: nothing is created twice, nothing is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

from .integration import kkiai_run
from .test_reliability import CHAIN, artifacts_intact, write

FAST = {"queue_seconds": 0.02, "predict_seconds": 0.05, "fault_seed": 7}
CLIENT = [
    "api.poll_interval=0.05",
    "api.list_lag_seconds=1",  # the emulator's list shows a prediction at once
    "api.max_poll_interval=0.1",
    "api.backoff_base=0.02",
    "api.backoff_max=0.1",
    "api.max_wait=0.2",
    "api.max_attempts=12",
]


@pytest.fixture
def faulty(request: pytest.FixtureRequest) -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(**FAST, **request.param)) as sandbox:
        yield sandbox


FAULTS = {
    "poll_5xx": {"poll_5xx_rate": 0.4},
    "create_429": {"create_429_rate": 0.4, "retry_after_seconds": 1},
    "drop_before_create": {"drop_before_create_rate": 0.3},
    "drop_after_create": {"drop_after_create_rate": 0.3},
    "drop_poll": {"drop_poll_rate": 0.4},
    "file_5xx": {"file_5xx_rate": 0.4},
    "drop_file": {"drop_file_rate": 0.4},
    "slow": {"slow_rate": 0.3, "slow_seconds": 1.5},
}


@pytest.mark.parametrize(
    ("faulty", "kind"), [(v, k) for k, v in FAULTS.items()], ids=list(FAULTS), indirect=["faulty"]
)
def test_transient_faults_cost_nothing_twice_and_lose_nothing(tmp_path: Path, faulty: Any, kind: str) -> None:
    write(tmp_path, "chain", CHAIN)
    # Faults on polls need polls: without Prefer: wait the client polls every prediction.
    polls = kind in ("poll_5xx", "drop_poll")
    extra = (
        ["api.read_timeout=0.5", "api.wait_seconds=0"]
        if kind == "slow"
        else [f"api.wait_seconds={0 if polls else 1}"]
    )
    result = kkiai_run("pipeline=chain", f"api.base_url={faulty.base_url}", *CLIENT, *extra, cwd=tmp_path)
    stats = faulty.stats()
    assert stats["faults"][kind] > 0, stats  # the fault really happened
    assert result.code == 0, result.stderr
    assert stats["duplicates"] == 0
    assert stats["predictions"]["succeeded"] == 5
    assert artifacts_intact(result.run_dir) == 5
    assert {s["status"] for s in result.manifest["steps"].values()} == {"succeeded"}


@pytest.mark.parametrize("faulty", [{"fail_rate": 0.4}], indirect=True)
def test_failing_predictions_are_retried_as_asked_and_recorded(tmp_path: Path, faulty: Any) -> None:
    write(tmp_path, "chain", CHAIN)
    retries = [f"+pipeline.steps.{s}.retries=6" for s in "abcde"]
    result = kkiai_run("pipeline=chain", f"api.base_url={faulty.base_url}", *CLIENT, *retries, cwd=tmp_path)
    stats = faulty.stats()
    assert stats["faults"]["fail"] > 0
    assert result.code == 0, result.stderr
    attempts = [a for s in result.manifest["steps"].values() for a in s["attempts"]]
    assert len(attempts) == stats["requests"]["create"] == stats["predictions"]["total"]
    assert sum(a["status"] == "failed" for a in attempts) == stats["faults"]["fail"]
    # the only repeated creates are the retries of failed predictions, which the user asked for
    assert stats["duplicates"] == stats["faults"]["fail"]
    assert artifacts_intact(result.run_dir) == 5


@pytest.mark.parametrize("faulty", [{"fail_rate": 1.0}], indirect=True)
def test_a_prediction_that_keeps_failing_fails_its_step(tmp_path: Path, faulty: Any) -> None:
    write(tmp_path, "chain", CHAIN)
    result = kkiai_run("pipeline=chain", f"api.base_url={faulty.base_url}", *CLIENT, cwd=tmp_path)
    assert result.code == 1
    steps = result.manifest["steps"]
    assert {s: steps[s]["status"] for s in steps} == {
        "a": "failed",
        "b": "failed",
        "c": "skipped",
        "d": "skipped",
        "e": "skipped",
    }
    assert steps["a"]["error"].startswith(("E1001", "E6716"))
