"""One rate limit for the whole account under process launchers, measured at the server.

A sweep of 4 jobs runs in 4 worker processes (``hydra/launcher=joblib``: processes of this machine;
``hydra/launcher=ray``: tasks of a local Ray cluster) against the independent fake API. Every job needs
the same upstream prediction (``backdrop``) and then 3 of its own. The rates are set for the whole
account, as for a single process (120 creates a minute, bursts of 2): nothing is divided by hand.

What the server saw must show that

- the creates of all the processes together kept to the configured rate in every window (GCRA
  conformance: ``n`` creates within ``d`` seconds need ``n <= burst + d / interval``); with the limit
  per process, as before, four processes send four times the rate and this fails;
- the shared upstream prediction was paid for once: whichever job claimed it bought it, the others
  waited for it and reused it. Under joblib the jobs share one cache directory, so the ledger's owners
  settle it. Under Ray the sweep also runs over two cache directories, as two machines would have: the
  account's Ray actor settles it (the jobs of one subject share their 3 predictions the same way).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from kkiai_pipeline.rundir import load_record

from . import test_launchers
from .fakes.fake_api import TOKEN, FakeApi
from .integration import SCRIPTS
from .test_launchers import needs_joblib, needs_ray
from .test_reliability import write

VOLUME = """
name: volume
params: {subject: a mug}
steps:
  backdrop:
    model: stability-ai/stable-diffusion
    input: {prompt: "one backdrop for every job", width: 128, height: 128}
  shots:
    model: stability-ai/stable-diffusion-img2img
    foreach: "{{ [1, 2, 3] }}"
    input:
      image: "{{ steps.backdrop.output[0] }}"
      prompt: "{{ params.subject }}, take {{ item }}"
"""
JOBS = ("a mug", "a vase", "a cup", "a bowl")
RATE, BURST = 120, 2  # creates a minute for the whole account, and the burst
ray_temp_dir = test_launchers.ray_temp_dir  # the fixture: Ray's short session directory, removed after
SLACK_SECONDS = (
    0.3  # how much later than its slot a create may reach the server (a loaded machine, a new connection)
)


def conforms(times: list[float], *, per_minute: float, burst: int, slack: float = SLACK_SECONDS) -> bool:
    """Whether every window of the sorted ``times`` holds at most ``burst + seconds / interval`` of them."""
    interval = 60.0 / per_minute
    times = sorted(times)
    return all(
        j - i + 1 <= burst + (times[j] - times[i] + slack) / interval
        for i in range(len(times))
        for j in range(i + 1, len(times))
    )


def test_the_window_check_catches_four_processes_at_the_full_rate() -> None:
    one = [0.0, 0.0] + [0.5 * k for k in range(1, 6)]  # one process keeping to 120/min, burst 2
    assert conforms(one, per_minute=RATE, burst=BURST)
    assert not conforms(one * 4, per_minute=RATE, burst=BURST)
    assert not conforms([0.0, 0.0, 0.1], per_minute=RATE, burst=BURST)  # a third at once


def run_sweep(
    tmp_path: Path,
    fake: FakeApi,
    *launcher: str,
    jobs: tuple[str, ...] = (f"pipeline.params.subject={','.join(JOBS)}",),
    env: dict[str, str] | None = None,
) -> Path:
    write(tmp_path, "volume", VOLUME)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_", "RAY_"))}
    environ.update(KKIAI_API_TOKEN=TOKEN, **(env or {}))
    sweep_dir = tmp_path / "sweep"
    command = [
        str(SCRIPTS / "kkiai-run"),
        "-m",
        "pipeline=volume",
        *jobs,
        *launcher,
        "api=kkiai",
        f"api.base_url={fake.base_url}",
        f"api.create_rate_per_minute={RATE}",
        f"api.burst={BURST}",
        "api.wait_seconds=0",
        "api.poll_interval=0.05",
        "api.max_poll_interval=0.2",
        "progress=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    if not any(job.startswith("cache_dir=") for job in jobs):
        command.append(f"cache_dir={tmp_path / 'cache'}")
    done = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads((sweep_dir / "sweep.json").read_text())
    assert [job["status"] for job in result["jobs"]] == ["succeeded"] * 4
    return sweep_dir


def assert_one_limit_and_paid_once(fake: FakeApi, sweep_dir: Path, *, creates: int) -> None:
    with fake._lock:
        born = [p.born for p in fake._predictions.values()]
    assert fake.counters.creates == creates
    assert fake.counters.duplicates() == 0
    assert conforms(born, per_minute=RATE, burst=BURST), " ".join(str(b - min(born)) for b in sorted(born))
    logs = [(sweep_dir / str(n) / "run.log").read_text() for n in range(4)]
    assert not any("keeps to its local share" in log for log in logs)  # the shared limiter answered
    assert not any("is unreachable" in log for log in logs)
    records = [load_record(sweep_dir / str(n)) for n in range(4)]
    # what the runs say they paid for is what the server made: the others' results are shared or reused
    assert sum(record.totals().created for record in records) == creates
    assert [record.steps["backdrop"].obtained for record in records].count("created") == 1


@pytest.fixture
def fake() -> FakeApi:
    with FakeApi() as server:
        server.knobs.queue_seconds = 0.02
        server.knobs.predict_seconds = 0.1
        yield server


@needs_joblib
def test_joblib_workers_share_one_rate_limit_and_pay_the_shared_step_once(
    tmp_path: Path, fake: FakeApi
) -> None:
    sweep_dir = run_sweep(tmp_path, fake, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert_one_limit_and_paid_once(fake, sweep_dir, creates=1 + 4 * 3)  # the backdrop, each job's three
    assert (tmp_path / "cache" / "ratelimits").is_dir()  # the machine scope's state, beside the ledger


@pytest.mark.slow
@needs_ray
def test_ray_workers_share_one_rate_limit_and_pay_the_shared_step_once(
    tmp_path: Path, fake: FakeApi, ray_temp_dir: Path
) -> None:
    # two jobs per cache directory, as on two machines that share no cache: the cluster's record of
    # predictions in flight (the actor), not a ledger, makes the jobs of the other "machine" wait
    caches = f"{tmp_path / 'machine0'},{tmp_path / 'machine1'}"
    sweep_dir = run_sweep(
        tmp_path,
        fake,
        "hydra/launcher=ray",
        "hydra.launcher.ray.init.address=local",
        "+hydra.launcher.ray.init.num_cpus=4",
        "+hydra.launcher.ray.init.include_dashboard=false",
        f"+hydra.launcher.ray.init._temp_dir={ray_temp_dir}",
        jobs=("pipeline.params.subject=a mug,a vase", f"cache_dir={caches}"),
        env={
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
        },
    )
    assert_one_limit_and_paid_once(fake, sweep_dir, creates=1 + 2 * 3)  # the backdrop, each subject's three
    assert not list(tmp_path.glob("machine*/ratelimits"))  # the cluster scope: the actor, no file
