"""Ctrl-C and kill -9: an interrupted run pays for nothing twice, and its resume finishes the job."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..fakes.fake_api import FakeApi, KillWhen
from .helpers import SDXL, Result, creates_of, finish, report, run, start

KILL_REQUESTS = range(1, 13)  # the chain makes ~12 requests: per step a create, ~4 polls, a download
MIN_KILL_POINTS = 20
MAX_RESUMES = 3
WORKERS = 4


def wait_for(condition: Callable[[], bool], *, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("the condition never held")


def test_ctrl_c_with_creates_in_flight_exits_130_quickly_and_cancels_them(
    fake: FakeApi, tmp_path: Path
) -> None:
    fake.knobs.predict_seconds_for = {"cjwbw/rembg": 30}  # the shot is quick, the cut is held in Prefer: wait
    process = start(fake, tmp_path, "pipeline=chain", wait=60)
    wait_for(lambda: fake.counters.creates == 2 or process.poll() is not None)
    time.sleep(0.3)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    done = finish(process, tmp_path / "run", timeout=60)
    seconds = time.monotonic() - interrupted
    print(f"SIGINT -> exit {done.code} in {seconds:.2f} s; {report(fake)}")
    assert done.code == 130, done.explain()
    assert seconds < 8, done.explain()
    assert "running" not in done.statuses().values()
    assert done.statuses()["shot"] == "succeeded"
    unfinished = [pid for pid in fake.prediction_ids() if pid != done.ids()["shot"]]
    assert set(unfinished) <= set(fake.counters.canceled_ids)
    fake.knobs.predict_seconds_for = {}
    resumed = run(fake, tmp_path, "pipeline=chain", "resume=true", wait=1)
    print(report(fake))
    assert resumed.code == 0, resumed.explain()
    assert creates_of(fake, SDXL) == 1  # the shot had succeeded: never made again
    assert resumed.ids()["shot"] == done.ids()["shot"]


@dataclass(frozen=True)
class KillOutcome:
    at: int
    when: KillWhen
    fired: bool
    codes: list[int]
    creates: int
    duplicates: int
    statuses: dict[str, str]
    explain: str


def kill_and_resume(tmp_path: Path, at: int, when: KillWhen) -> KillOutcome:
    """One kill point: kill -9 at request ``at``, then resume until the run succeeds."""
    tmp = tmp_path / f"{when}-{at}"
    tmp.mkdir()
    with FakeApi() as fake:
        fake.knobs.predict_seconds, fake.knobs.clock_skew, fake.knobs.list_lag = 0.4, -120, 2
        process = start(fake, tmp, "pipeline=chain")
        hook = fake.arm_kill(process.pid, at=at, when=when)
        results: list[Result] = [finish(process, tmp / "run")]
        while results[-1].code not in (0, 2) and len(results) <= MAX_RESUMES:  # 2: refused, nothing sent
            results.append(run(fake, tmp, "pipeline=chain", "resume=true"))
        last = results[-1]
        try:
            statuses = last.statuses()
        except (OSError, json.JSONDecodeError, KeyError):
            statuses = {}
        c = fake.counters
        return KillOutcome(
            at,
            when,
            hook.fired,
            [r.code for r in results],
            c.creates,
            c.duplicates(),
            statuses,
            last.explain(),
        )


def test_kill_9_at_every_request_then_resume_never_pays_twice(tmp_path: Path) -> None:
    points = [(at, when) for at in KILL_REQUESTS for when in ("before", "after")]
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda p: kill_and_resume(tmp_path, *p), points))
    fired = [o for o in outcomes if o.fired]
    for o in outcomes:
        print(
            f"kill at {o.at} {o.when}: fired={o.fired} codes={o.codes} creates={o.creates} dup={o.duplicates}"
        )
    print(
        f"kill -9 summary: scenarios={len(outcomes)} kill points fired={len(fired)} "
        f"creates={sum(o.creates for o in outcomes)} duplicates={sum(o.duplicates for o in outcomes)}"
    )
    assert len(fired) >= MIN_KILL_POINTS
    bad = [o for o in outcomes if o.duplicates or o.statuses != {"shot": "succeeded", "cut": "succeeded"}]
    assert not bad, "\n\n".join(f"kill at {o.at} {o.when}: {o}" for o in bad)
