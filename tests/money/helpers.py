"""Running the real ``kkiai-run`` against the fake API, and reading what the run recorded.

``MONEY_LEGACY=1`` in the environment drops the settings that only the new core knows
(``api.list_lag_seconds``, ``api.clock_skew_seconds``, ``repay_expired``), so that the scenarios can be
run against a core without them and fail for what it does rather than for an unknown setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fakes.fake_api import MODELS, TOKEN, FakeApi

PIPELINES = Path(__file__).parent / "pipelines"
SCRIPTS = Path(sys.executable).parent
LEGACY = os.environ.get("MONEY_LEGACY") == "1"  # read at import, before the autouse fixture cleans os.environ
NEW_SETTINGS = ("api.list_lag_seconds=", "api.clock_skew_seconds=", "repay_expired=")
SDXL = next(v for v, name in MODELS.items() if name == "stability-ai/sdxl")
REMBG = next(v for v, name in MODELS.items() if name == "cjwbw/rembg")


@dataclass(frozen=True)
class Result:
    """One finished ``kkiai-run``."""

    code: int
    stdout: str
    stderr: str
    run_dir: Path
    seconds: float

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "run.json").read_text())
        return data

    def statuses(self) -> dict[str, str]:
        return {sid: step["status"] for sid, step in self.manifest["steps"].items()}

    def ids(self) -> dict[str, str | None]:
        return {sid: step["prediction_id"] for sid, step in self.manifest["steps"].items()}

    def explain(self) -> str:
        """What to print when an assertion about this run fails."""
        tail = "\n".join(self.stderr.splitlines()[-25:])
        return f"exit {self.code} after {self.seconds:.1f} s; stderr ends:\n{tail}"


def command(
    fake: FakeApi,
    tmp: Path,
    *args: str,
    wait: int = 0,
    list_lag: float = 3,
    run_dir: Path | None = None,
    multirun: bool = False,
) -> list[str]:
    """The ``kkiai-run`` command line for ``args`` against ``fake``, with fast client timings."""
    words = [
        str(SCRIPTS / "kkiai-run"),
        *(["-m"] if multirun else []),
        *args,
        "api=kkiai",
        f"api.base_url={fake.base_url}",
        f"cache_dir={tmp / 'cache'}",
        "progress=false",
        "api.poll_interval=0.05",
        "api.max_poll_interval=0.2",
        "api.backoff_base=0.01",
        "api.backoff_max=0.1",
        f"api.wait_seconds={wait}",
        f"api.list_lag_seconds={list_lag}",
        "api.clock_skew_seconds=300",
    ]
    if not multirun:
        words.append(f"hydra.run.dir={run_dir or tmp / 'run'}")
    if LEGACY:
        words = [w for w in words if not w.startswith(NEW_SETTINGS)]
    return words


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_", "REPLICATE_"))}
    env.update(KKIAI_API_TOKEN=TOKEN, KKIAI_PIPELINE_PATH=str(PIPELINES))
    return env


def start(fake: FakeApi, tmp: Path, *args: str, **options: Any) -> subprocess.Popen[str]:
    """Start ``kkiai-run`` without waiting for it."""
    return subprocess.Popen(
        command(fake, tmp, *args, **options),
        cwd=tmp,
        env=environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], run_dir: Path, *, timeout: float = 90) -> Result:
    """Wait for a started ``kkiai-run``; a hang is killed and reported as exit -9."""
    started = time.monotonic()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return Result(process.returncode, stdout, stderr, run_dir, time.monotonic() - started)


def run(fake: FakeApi, tmp: Path, *args: str, timeout: float = 90, **options: Any) -> Result:
    """Run ``kkiai-run ARGS`` to its end (``hydra.run.dir`` is ``tmp/run`` unless ``run_dir=``)."""
    run_dir = options.get("run_dir") or tmp / "run"
    return finish(start(fake, tmp, *args, **options), run_dir, timeout=timeout)


def creates_of(fake: FakeApi, version: str) -> int:
    """How many predictions of ``version`` (a hash) the fake made, whatever their input."""
    return sum(n for (v, _), n in fake.counters.by_input.items() if v == version)


def report(fake: FakeApi) -> str:
    c = fake.counters
    return (
        f"creates={c.creates} distinct={len(c.by_input)} duplicates={c.duplicates()} gets={c.gets} "
        f"cancels={c.cancels} lists={c.lists} file_gets={c.file_gets} requests={c.requests}"
    )
