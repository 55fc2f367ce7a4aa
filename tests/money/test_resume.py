"""Resumes and sweeps pay only for what changed or failed."""

from __future__ import annotations

import json
from pathlib import Path

from ..fakes.fake_api import FakeApi
from .helpers import SDXL, finish, report, run, start

ALL_SUCCEEDED = dict.fromkeys(("shots", "left", "right", "final"), "succeeded")


def test_one_resume_reruns_a_failed_step_and_all_its_dependents(fake: FakeApi, tmp_path: Path) -> None:
    fake.knobs.fail_next = 1  # the first prediction (shots, the top of the diamond) fails
    first = run(fake, tmp_path, "pipeline=diamond", wait=1)
    assert first.code == 1, first.explain()
    assert first.statuses()["shots"] == "failed"
    resumed = run(fake, tmp_path, "pipeline=diamond", "resume=true", wait=1)
    print(report(fake))
    assert resumed.code == 0, resumed.explain()
    assert resumed.statuses() == ALL_SUCCEEDED
    # the failed shots once more (a failed prediction may be paid again), everything else once
    assert fake.counters.creates == 5 and len(fake.counters.by_input) == 4


def test_a_resume_with_a_changed_param_reruns_only_the_changed_steps(fake: FakeApi, tmp_path: Path) -> None:
    first = run(fake, tmp_path, "pipeline=diamond", wait=1)
    assert first.code == 0, first.explain()
    assert fake.counters.creates == 4
    before = first.ids()  # read now: the resume rewrites the same run.json
    resumed = run(
        fake, tmp_path, "pipeline=diamond", "pipeline.params.style=hard light", "resume=true", wait=1
    )
    print(report(fake))
    assert resumed.code == 0, resumed.explain()
    assert resumed.statuses() == ALL_SUCCEEDED
    assert fake.counters.creates == 5 and fake.counters.duplicates() == 0
    after = resumed.ids()
    assert [sid for sid in before if before[sid] != after[sid]] == ["final"]
    assert "hard light" in resumed.manifest["steps"]["final"]["input"]["prompt"]


def test_a_sweep_creates_its_shared_upstream_steps_once(fake: FakeApi, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    process = start(
        fake,
        tmp_path,
        "pipeline=diamond",
        "pipeline.params.style=soft light,hard light",
        f"hydra.sweep.dir={sweep_dir}",
        multirun=True,
        wait=1,
    )
    done = finish(process, sweep_dir)
    print(report(fake))
    assert done.code == 0, done.explain()
    # shots, left and right once; final once per style
    assert fake.counters.creates == 5 and fake.counters.duplicates() == 0
    assert sum(n for (v, _), n in fake.counters.by_input.items() if v == SDXL) == 3
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert len(jobs) == 2
