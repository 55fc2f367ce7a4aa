"""Two processes on one machine that need the same predictions at the same time pay for them once."""

from __future__ import annotations

from pathlib import Path

from ..fakes.fake_api import FakeApi
from .helpers import finish, report, start


def test_two_runs_at_once_share_one_cache_and_pay_once(fake: FakeApi, tmp_path: Path) -> None:
    fake.knobs.predict_seconds = 1.5  # long enough for both processes to want the shot at once
    first = start(fake, tmp_path, "pipeline=chain", run_dir=tmp_path / "one", wait=1)
    second = start(fake, tmp_path, "pipeline=chain", run_dir=tmp_path / "two", wait=1)
    one, two = finish(first, tmp_path / "one"), finish(second, tmp_path / "two")
    print(report(fake))
    assert one.code == 0, one.explain()
    assert two.code == 0, two.explain()
    assert fake.counters.creates == 2 and fake.counters.duplicates() == 0  # shot and cut, once each
    assert one.ids() == two.ids()
    assert {s["obtained"] for s in two.manifest["steps"].values()} | {
        s["obtained"] for s in one.manifest["steps"].values()
    } == {"created", "reused"}
