"""Output files that cannot be fetched: a resume fetches them by prediction id, never by a new create."""

from __future__ import annotations

import time
from pathlib import Path

from ..fakes.fake_api import FakeApi
from .helpers import SDXL, Result, creates_of, report, run

DATA_TTL = 2.0


def failed_downloads(fake: FakeApi, tmp_path: Path) -> Result:
    """A first run whose shot succeeds at the API but whose files cannot be downloaded."""
    fake.knobs.file_failures = -1
    first = run(fake, tmp_path, "pipeline=chain", wait=1)
    assert first.code == 1, first.explain()
    assert first.statuses()["shot"] != "succeeded"
    assert first.statuses()["cut"] != "succeeded"
    assert fake.counters.creates == 1 and fake.counters.file_gets >= 1
    fake.knobs.file_failures = 0
    return first


def test_a_resume_downloads_the_files_of_a_succeeded_prediction_by_id(fake: FakeApi, tmp_path: Path) -> None:
    first = failed_downloads(fake, tmp_path)
    resumed = run(fake, tmp_path, "pipeline=chain", "resume=true", wait=1)
    print(report(fake))
    assert resumed.code == 0, resumed.explain()
    assert fake.counters.creates == 2 and fake.counters.duplicates() == 0
    assert resumed.statuses() == {"shot": "succeeded", "cut": "succeeded"}
    assert resumed.ids()["shot"] == first.ids()["shot"]


def test_files_removed_at_the_api_are_reported_and_repaid_only_when_asked(
    fake: FakeApi, tmp_path: Path
) -> None:
    failed_downloads(fake, tmp_path)
    fake.knobs.data_ttl = DATA_TTL
    time.sleep(DATA_TTL + 0.2)  # the shot's data is gone; a new prediction keeps its files DATA_TTL s
    resumed = run(fake, tmp_path, "pipeline=chain", "resume=true", wait=1)
    print(report(fake))
    assert resumed.code == 1, resumed.explain()
    assert fake.counters.creates == 1
    shot = resumed.manifest["steps"]["shot"]
    assert shot["status"] != "succeeded"
    assert "removed" in (shot["error"] or "").lower(), shot["error"]
    repaid = run(fake, tmp_path, "pipeline=chain", "resume=true", "repay_expired=true", wait=1)
    print(report(fake))
    assert repaid.code == 0, repaid.explain()
    assert creates_of(fake, SDXL) == 2  # exactly one new prediction for the shot ...
    assert fake.counters.creates == 3  # ... and the cut, made once
    assert repaid.statuses() == {"shot": "succeeded", "cut": "succeeded"}
