"""Create answers that are lost or garbled: the run finds the prediction instead of paying again.

The fake's clock is 120 s behind ours and its list shows a prediction only 2 s after its creation
(the ``fake`` fixture), so finding a lost create takes patience and tolerance of the server's clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..fakes.fake_api import FakeApi
from .helpers import Result, report, run

MAX_RESUMES = 2


@pytest.mark.parametrize("fault", ["creates_500", "creates_dropped"])
def test_a_lost_create_answer_is_found_in_a_lagging_list_behind_a_skewed_clock(
    fake: FakeApi, tmp_path: Path, fault: str
) -> None:
    setattr(fake.knobs, fault, 1)  # the first create (step shot) is made, its answer lost
    done = run(fake, tmp_path, "pipeline=chain", wait=1)
    print(fault, report(fake))
    assert done.code == 0, done.explain()
    assert fake.counters.duplicates() == 0
    assert fake.counters.creates == 2
    assert done.statuses() == {"shot": "succeeded", "cut": "succeeded"}
    assert set(done.ids().values()) == set(fake.prediction_ids())


@pytest.mark.parametrize("fault", ["creates_truncated", "creates_html", "creates_without_id"])
def test_a_malformed_2xx_create_answer_is_never_paid_again(fake: FakeApi, tmp_path: Path, fault: str) -> None:
    setattr(fake.knobs, fault, 1)
    # No Prefer: wait, so the garbled answer stood for an unfinished prediction: only its id could follow it.
    results = [run(fake, tmp_path, "pipeline=chain")]
    while results[-1].code not in (0, 2) and len(results) <= MAX_RESUMES:  # 2: refused, nothing sent
        results.append(run(fake, tmp_path, "pipeline=chain", "resume=true"))
    print(fault, [r.code for r in results], report(fake))
    assert fake.counters.duplicates() == 0, results[-1].explain()
    assert fake.counters.creates == 2
    assert results[-1].code == 0, results[-1].explain()
    assert results[-1].statuses() == {"shot": "succeeded", "cut": "succeeded"}
    assert set(results[-1].ids().values()) == set(fake.prediction_ids())


def test_without_a_list_a_lost_create_stays_unresolved_and_resumes_never_resend_it(
    fake: FakeApi, tmp_path: Path
) -> None:
    fake.knobs.list_status = 404
    fake.knobs.creates_dropped = 1
    runs: list[Result] = [run(fake, tmp_path, "pipeline=chain", wait=1)]
    for _ in range(2):
        runs.append(run(fake, tmp_path, "pipeline=chain", "resume=true", wait=1))
    print([r.code for r in runs], report(fake))
    assert fake.counters.creates == 1, runs[-1].explain()
    for done in runs:
        assert done.code == 1, done.explain()
        statuses = done.statuses()
        assert statuses["shot"] == "unresolved"
        assert statuses["cut"] in ("pending", "skipped")
