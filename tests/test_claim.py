"""A run directory belongs to one run: the claim is taken before Hydra writes anything there.

Most tests run the real ``kkiai-run`` against ``api=sandbox``; the concurrent pair points two runs at
one in-process emulator instead, so that the creates both made can be counted.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kkiai_pipeline.claim import LOCK_FILE, claim_dir
from kkiai_pipeline.errors import ConfigError, RunDirInUse
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

from .integration import SCRIPTS, TOKEN, creates
from .test_reliability import write

PAIR = """
name: pair
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: a mug, width: 128, height: 128}
  cut:
    model: cjwbw/rembg
    input: {image: "{{ steps.shot.output[0] }}"}
"""
STAMP = "%Y-%m-%d_%H-%M-%S"  # the default directories' names (conf/config.yaml)


def command(tmp_path: Path, *args: str, cache: str = "cache") -> list[str]:
    return [
        str(SCRIPTS / "kkiai-run"),
        *args,
        "pipeline=pair",
        "progress=false",
        f"cache_dir={tmp_path / cache}",
    ]


SANDBOX = ("api=sandbox", "api.sandbox.queue_seconds=0.05", "api.sandbox.predict_seconds=0.1")


def start(tmp_path: Path, *args: str, cache: str = "cache") -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_"))}
    environ["KKIAI_API_TOKEN"] = TOKEN
    return subprocess.Popen(
        command(tmp_path, *args, cache=cache),
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    return finish(start(tmp_path, *SANDBOX, *args))


def snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file's bytes and every entry's mtime under ``folder`` (the folder itself included)."""
    entries: dict[str, tuple[bytes | None, int]] = {".": (None, folder.stat().st_mtime_ns)}
    for path in sorted(folder.rglob("*")):
        data = path.read_bytes() if path.is_file() else None
        entries[path.relative_to(folder).as_posix()] = (data, path.stat().st_mtime_ns)
    return entries


@contextmanager
def held(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock from this process, as a run would (our pid written in the lock file)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def in_use(folder: Path, pid: int) -> str:
    return f"kkiai-run: error: {folder} is in use by another run (pid {pid})\n"


def taken(folder: Path) -> str:
    return (
        f"kkiai-run: error: {folder} already holds a run: resume it with resume=true, "
        "or choose another hydra.run.dir\n"
    )


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A run directory holding a finished run of ``pair``."""
    write(tmp_path, "pair", PAIR)
    run_dir = tmp_path / "run"
    code, stderr = run(tmp_path, f"hydra.run.dir={run_dir}")
    assert code == 0, stderr
    return run_dir


def test_a_run_holding_the_directory_refuses_a_second_one_that_changes_nothing(
    tmp_path: Path, finished: Path
) -> None:
    before = snapshot(finished)
    with held(finished):
        locked = snapshot(finished)
        for extra in ("resume=true", "resume=false"):
            code, stderr = run(tmp_path, f"hydra.run.dir={finished}", extra)
            assert (code, stderr) == (2, in_use(finished, os.getpid()))
            assert snapshot(finished) == locked
    assert {k: v for k, v in locked.items() if k != LOCK_FILE} == {
        k: v for k, v in before.items() if k != LOCK_FILE
    }


def test_a_held_new_directory_gets_no_hydra_files_and_no_log(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    run_dir = tmp_path / "fresh"
    with held(run_dir):
        code, stderr = run(tmp_path, f"hydra.run.dir={run_dir}")
        assert (code, stderr) == (2, in_use(run_dir, os.getpid()))
    assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]
    assert (run_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_finished_run_is_refused_without_resume_before_anything_is_written(
    tmp_path: Path, finished: Path
) -> None:
    before = snapshot(finished)
    code, stderr = run(tmp_path, f"hydra.run.dir={finished}")
    assert (code, stderr) == (2, taken(finished))
    assert snapshot(finished) == before
    # A run directory from before the claim existed has no lock file: none is created to refuse it.
    (finished / LOCK_FILE).unlink()
    before = snapshot(finished)
    code, stderr = run(tmp_path, f"hydra.run.dir={finished}")
    assert (code, stderr) == (2, taken(finished))
    assert snapshot(finished) == before


def test_resume_runs_once_the_holder_is_gone_even_after_kill_9(tmp_path: Path, finished: Path) -> None:
    ids = {k: s["prediction_id"] for k, s in json.loads((finished / "run.json").read_text())["steps"].items()}
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from kkiai_pipeline.claim import claim_dir; "
            "claim_dir(Path(sys.argv[1]), fresh=False, refuse_existing=False); print('held', flush=True); "
            "time.sleep(120)",
            str(finished),
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        code, stderr = run(tmp_path, f"hydra.run.dir={finished}", "resume=true")
        assert (code, stderr) == (2, in_use(finished, holder.pid))
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    code, stderr = run(tmp_path, f"hydra.run.dir={finished}", "resume=true")
    assert code == 0, stderr
    manifest = json.loads((finished / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert {k: s["prediction_id"] for k, s in manifest["steps"].items()} == ids  # nothing made again


@pytest.fixture(scope="module")
def slow_sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0.05, predict_seconds=1.0)) as running:
        yield running


def wait_for_lock(folder: Path, pid: int) -> None:
    for _ in range(600):
        if (folder / LOCK_FILE).exists() and (folder / LOCK_FILE).read_text() == f"{pid}\n":
            return
        time.sleep(0.05)
    raise AssertionError(f"{folder} was never claimed by pid {pid}")


def test_two_real_runs_in_one_directory_make_one_set_of_predictions(
    tmp_path: Path, slow_sandbox: Any
) -> None:
    write(tmp_path, "pair", PAIR)
    api = (f"api.base_url={slow_sandbox.base_url}", "api.poll_interval=0.05")
    # Each run has its own cache: a second run that did run would have to create again, and be counted.
    run_dir = tmp_path / "one"
    before = creates(slow_sandbox)
    first = start(tmp_path, *api, f"hydra.run.dir={run_dir}", cache="cache-1")
    wait_for_lock(run_dir, first.pid)
    first.send_signal(signal.SIGSTOP)  # still running, however slowly the second one starts
    try:
        second = start(tmp_path, *api, f"hydra.run.dir={run_dir}", cache="cache-2")
        assert finish(second) == (2, in_use(run_dir, first.pid))
    finally:
        first.send_signal(signal.SIGCONT)
    code, stderr = finish(first)
    assert code == 0, stderr
    assert creates(slow_sandbox) - before == 2

    # Both started at once: one runs; the other is refused whichever way it finds the directory.
    run_dir = tmp_path / "two"
    before = creates(slow_sandbox)
    pair = [start(tmp_path, *api, f"hydra.run.dir={run_dir}", cache=f"cache-{n}") for n in (3, 4)]
    results = [finish(p) for p in pair]
    winner = next(p for p, (code, _) in zip(pair, results, strict=True) if code == 0)
    loser = [stderr for code, stderr in results if code != 0]
    unnamed = f"kkiai-run: error: {run_dir} is in use by another run\n"  # looked before the pid was written
    assert loser in ([in_use(run_dir, winner.pid)], [unnamed], [taken(run_dir)])
    assert creates(slow_sandbox) - before == 2
    assert (run_dir / LOCK_FILE).read_text() == f"{winner.pid}\n"
    # .hydra/ is the winner's: the loser (its own cache_dir) did not overwrite it.
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert f"cache_dir={tmp_path / f'cache-{3 + pair.index(winner)}'}" in overrides


def taken_seconds(parent: Path) -> list[str]:
    """Make the default directory of every second from now to a minute on exist already."""
    now = datetime.now()
    names = [(now + timedelta(seconds=s)).strftime(STAMP) for s in range(-2, 60)]
    for name in names:
        (parent / name).mkdir(parents=True, exist_ok=True)
    return names


def test_default_run_directories_started_in_one_second_do_not_collide(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    parent = tmp_path / "outputs" / "pair"
    names = taken_seconds(parent)
    runs = [start(tmp_path, *SANDBOX, cache=f"cache-{n}") for n in range(2)]  # no hits between them
    for process in runs:
        code, stderr = finish(process)
        assert code == 0, stderr
    assert all(not any((parent / name).iterdir()) for name in names)  # the taken ones were left alone
    made = sorted(p for p in parent.iterdir() if p.name not in names)
    assert len(made) == 2
    ids = set()
    for run_dir in made:
        stem, _, suffix = run_dir.name.rpartition("-")
        assert stem in names and suffix in ("2", "3")
        # The directory locked is the one Hydra wrote into and the run recorded in.
        assert {p.name for p in run_dir.iterdir()} >= {LOCK_FILE, ".hydra", "run.json", "run.log"}
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["run"]["dir"] == str(run_dir.relative_to(tmp_path))
        assert hydra["runtime"]["output_dir"] == str(run_dir)
        ids |= {s["prediction_id"] for s in json.loads((run_dir / "run.json").read_text())["steps"].values()}
    assert len(ids) == 4


def multirun(tmp_path: Path, *args: str) -> tuple[int, str]:
    return finish(start(tmp_path, "-m", *SANDBOX, "seed=1,2", *args))


def test_default_sweep_directories_do_not_collide(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    parent = tmp_path / "multirun"
    names = taken_seconds(parent)
    code, stderr = multirun(tmp_path)
    assert code == 0, stderr
    assert all(not any((parent / name).iterdir()) for name in names)
    [sweep_dir] = [p for p in parent.iterdir() if p.name not in names]
    assert sweep_dir.name.rpartition("-")[0] in names
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [(j["run_dir"], j["status"]) for j in jobs] == [("0", "succeeded"), ("1", "succeeded")]
    for job in ("0", "1"):
        hydra = yaml.safe_load((sweep_dir / job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["runtime"]["output_dir"] == str(sweep_dir / job)
    assert (sweep_dir / LOCK_FILE).is_file() and not (sweep_dir / "0" / LOCK_FILE).exists()


def test_a_held_or_finished_sweep_directory_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    sweep_dir = tmp_path / "sweep"
    with held(sweep_dir):
        before = snapshot(sweep_dir)
        assert multirun(tmp_path, f"hydra.sweep.dir={sweep_dir}") == (2, in_use(sweep_dir, os.getpid()))
        assert snapshot(sweep_dir) == before
    code, stderr = multirun(tmp_path, f"hydra.sweep.dir={sweep_dir}")
    assert code == 0, stderr
    before = snapshot(sweep_dir)
    code, stderr = multirun(tmp_path, f"hydra.sweep.dir={sweep_dir}")
    assert (code, stderr) == (
        2,
        f"kkiai-run: error: {sweep_dir} already holds a sweep: resume it with resume=true, "
        "or choose another hydra.sweep.dir\n",
    )
    assert snapshot(sweep_dir) == before
    code, stderr = multirun(tmp_path, f"hydra.sweep.dir={sweep_dir}", "resume=true")
    assert code == 0, stderr


def test_claim_dir_takes_the_next_free_suffix_of_a_default_directory(tmp_path: Path) -> None:
    (tmp_path / "out" / "stamp").mkdir(parents=True)
    (tmp_path / "out" / "stamp-2").mkdir()
    claims = [claim_dir(tmp_path / "out" / "stamp", fresh=True, refuse_existing=False) for _ in range(2)]
    try:
        assert [c.path.name for c in claims] == ["stamp-3", "stamp-4"]
        with pytest.raises(RunDirInUse) as caught:
            claim_dir(claims[0].path, fresh=False, refuse_existing=False)
        assert (caught.value.run_dir, caught.value.pid) == (claims[0].path, os.getpid())
    finally:
        for claim in claims:
            claim.release()
    again = claim_dir(claims[0].path, fresh=False, refuse_existing=True)
    again.release()


def test_claim_dir_refuses_a_directory_holding_a_run_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_dir(tmp_path, fresh=False, refuse_existing=True)
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
    claim_dir(tmp_path, fresh=False, refuse_existing=False).release()  # resume: allowed
