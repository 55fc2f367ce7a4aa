"""The same sweep under Hydra's process launchers: ``hydra/launcher=joblib`` and ``hydra/launcher=ray``.

Each test runs the real ``kkiai-run -m`` in a subprocess (a 2x2 sweep on ``api=sandbox``) and checks the
sweep's files, as tests/test_sweep.py does for the default launcher. To show that the jobs really ran
where the launcher put them, a small Hydra callback (written next to the test's pipeline and loaded with
``+hydra.callbacks.probe``) records, for the sweep and for each job, the process it ran in.

The launchers are optional extras (``pip install '.[joblib]'`` / ``'.[ray]'``): without them these tests
are skipped. Hydra finds them in the ``hydra_plugins`` namespace package, which works for these normally
installed (non-editable) packages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .integration import SCRIPTS, TOKEN
from .test_reliability import write

PAIR = """
name: pair
params: {subject: a mug}
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: "{{ params.subject }}", width: 128, height: 128, guidance_scale: 7.5}
  cut:
    model: cjwbw/rembg
    input: {image: "{{ steps.shot.output[0] }}"}
"""

# A Hydra callback that records which process ran the sweep and which ran each job. Hydra pickles the
# callbacks to the launcher's workers, so it lives in a module of its own (on PYTHONPATH) that they import.
PROBE = """
import json
import multiprocessing
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback


class Probe(Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def _write(self, name, **extra):
        self.out.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "process": multiprocessing.current_process().name,
            "ray_task": None,
            **extra,
        }
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                info["ray_task"] = ray.get_runtime_context().get_task_id()
        (self.out / name).write_text(json.dumps(info))

    def on_multirun_start(self, config, **kwargs):
        self._write("sweep.json")

    def on_job_start(self, config, **kwargs):
        self._write(f"job-{config.hydra.job.num}.json", cwd=os.getcwd())
"""

SWEEP_ARGS = (
    "pipeline=pair",
    "pipeline.params.subject=a mug,a vase",
    "pipeline.steps.shot.input.guidance_scale=5,9",
)


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_joblib = pytest.mark.skipif(
    not installed("joblib", "hydra_plugins.hydra_joblib_launcher"),
    reason="hydra-joblib-launcher is not installed (pip install '.[joblib]')",
)
needs_ray = pytest.mark.skipif(
    not installed("ray", "hydra_plugins.hydra_ray_launcher"),
    reason="hydra-ray-launcher is not installed (pip install '.[ray]')",
)


def sweep(
    tmp_path: Path,
    *launcher_args: str,
    sweep_args: tuple[str, ...] = SWEEP_ARGS,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``sweep_args`` (the 2x2 sweep of PAIR) with ``launcher_args``; returns the process, the sweep dir."""
    write(tmp_path, "pair", PAIR)
    (tmp_path / "kkiai_probe.py").write_text(PROBE)
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_", "RAY_", "PYTHONPATH"))
    }
    environ["KKIAI_API_TOKEN"] = TOKEN
    environ["PYTHONPATH"] = str(tmp_path)  # where the launcher's workers import the probe from
    environ.update(env or {})
    sweep_dir = tmp_path / "sweep"
    command = [
        str(SCRIPTS / "kkiai-run"),
        "-m",
        *sweep_args,
        *launcher_args,
        "api=sandbox",
        "api.sandbox.queue_seconds=0.05",
        "api.sandbox.predict_seconds=0.2",
        "progress=false",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
        "+hydra.callbacks.probe._target_=kkiai_probe.Probe",
        f"+hydra.callbacks.probe.out={tmp_path / 'probe'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=timeout)
    return done, sweep_dir


def assert_sweep_succeeded(done: subprocess.CompletedProcess[str], sweep_dir: Path) -> list[dict[str, Any]]:
    """Exit 0; sweep.json says succeeded with 4 jobs, each with a succeeded run.json and its files."""
    assert done.returncode == 0, done.stderr
    result = json.loads((sweep_dir / "sweep.json").read_text())
    assert result["status"] == "succeeded"
    assert result["exit_code"] == 0
    jobs: list[dict[str, Any]] = result["jobs"]
    assert [j["job"] for j in jobs] == [0, 1, 2, 3]
    assert [j["overrides"][1:3] for j in jobs] == [  # as Hydra writes them, spaces escaped
        ["pipeline.params.subject=a\\ mug", "pipeline.steps.shot.input.guidance_scale=5"],
        ["pipeline.params.subject=a\\ mug", "pipeline.steps.shot.input.guidance_scale=9"],
        ["pipeline.params.subject=a\\ vase", "pipeline.steps.shot.input.guidance_scale=5"],
        ["pipeline.params.subject=a\\ vase", "pipeline.steps.shot.input.guidance_scale=9"],
    ]
    sent = []
    for job in jobs:
        assert job["status"] == "succeeded", job
        manifest = json.loads((sweep_dir / job["run_dir"] / "run.json").read_text())
        assert manifest["status"] == "succeeded"
        assert {s["status"] for s in manifest["steps"].values()} == {"succeeded"}
        assert len(job["outputs"]) == 2
        assert all((sweep_dir / path).is_file() for path in job["outputs"])
        sent.append(
            (
                manifest["steps"]["shot"]["input"]["prompt"],
                manifest["steps"]["shot"]["input"]["guidance_scale"],
            )
        )
    assert sent == [("a mug", 5), ("a mug", 9), ("a vase", 5), ("a vase", 9)]
    assert (sweep_dir / "summary.csv").is_file()
    assert (sweep_dir / "grid.html").is_file()
    assert TOKEN not in (sweep_dir / "multirun.yaml").read_text()
    return jobs


def probes(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the probe recorded: the sweep's process, then each job's."""
    folder = tmp_path / "probe"
    main = json.loads((folder / "sweep.json").read_text())
    return main, [json.loads((folder / f"job-{n}.json").read_text()) for n in range(4)]


@needs_joblib
def test_a_sweep_runs_under_the_joblib_launcher(tmp_path: Path) -> None:
    done, sweep_dir = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert_sweep_succeeded(done, sweep_dir)
    # the launcher's own log line, and the jobs ran in its loky worker processes, not in kkiai-run
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in done.stdout + done.stderr
    main, jobs = probes(tmp_path)
    assert main["process"] == "MainProcess"
    assert all(job["process"].startswith("LokyProcess") for job in jobs), jobs
    assert all(job["pid"] != main["pid"] and job["ppid"] == main["pid"] for job in jobs), (main, jobs)


@needs_joblib
def test_a_job_with_bad_input_is_reported_under_a_process_launcher(tmp_path: Path) -> None:
    done, sweep_dir = sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        sweep_args=("pipeline=pair", "pipeline.steps.shot.input.width=128,500"),
    )
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded", "error"]
    assert "width must be one of" in jobs[1]["error"]
    assert done.returncode == 2, done.stderr


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    """Ray's session directory: short (it holds Unix sockets, whose paths are limited), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="kkray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@needs_ray
def test_a_sweep_runs_under_the_ray_launcher(tmp_path: Path, ray_temp_dir: Path) -> None:
    done, sweep_dir = sweep(
        tmp_path,
        "hydra/launcher=ray",
        # a new local cluster (never one already running here), small, on the loopback interface
        "hydra.launcher.ray.init.address=local",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        f"+hydra.launcher.ray.init._temp_dir={ray_temp_dir}",
        env={
            # bind every Ray server to 127.0.0.1 (Ray's single-machine mode) instead of this host's address
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # token auth with a token of this test's own, not one generated into ~/.ray/auth_token
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",  # nothing reported anywhere
        },
    )
    assert_sweep_succeeded(done, sweep_dir)
    # the launcher's own log line, and each job ran inside a Ray task in a Ray worker process
    assert "Ray Launcher is launching 4 jobs" in done.stdout + done.stderr
    main, jobs = probes(tmp_path)
    assert main["ray_task"] is None
    assert all(job["ray_task"] for job in jobs), jobs
    assert len({job["ray_task"] for job in jobs}) == 4
    assert all(job["pid"] != main["pid"] for job in jobs)
    assert "Started a local Ray instance" in done.stderr
