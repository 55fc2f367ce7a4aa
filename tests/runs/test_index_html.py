"""index.html as text: relative lazy thumbnails, links, and hostile names escaped (no fixture runs)."""

from __future__ import annotations

from pathlib import Path

from kkiai_pipeline.report.index_html import render_index
from kkiai_pipeline.runs_index import Entry


def test_cards_link_relatively_load_lazily_and_escape_what_they_show(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "p q" / "r1"
    hostile = '<img src=x onerror="alert(1)">'
    entries = [
        Entry(
            "run",
            run,
            hostile,
            "succeeded",
            started_at="2026-01-02T03:04:05.000Z",
            created=2,
            reused=1,
            predict_time=1.5,
            cost=0.035,
            outputs=(run / "steps/s/output_0.png", run / "steps/s/clip.mp4"),
            page=run / "report.html",
        ),
        Entry(
            "sweep",
            tmp_path / "multirun" / "s",
            "p",
            "failed",
            started_at="2025-05-05T00:00:00Z",
            jobs=1,
            page=tmp_path / "multirun/s/grid.html",
        ),
        Entry("run", tmp_path / "outputs" / "bad", "", "unreadable", problem="run.json: <oops>"),
    ]
    page = render_index(tmp_path / "outputs", entries, incomplete=True)
    assert hostile not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "<oops>" not in page and "run.json: &lt;oops&gt;" in page
    assert '<img src="p%20q/r1/steps/s/output_0.png" loading="lazy" decoding="async"' in page
    assert '<a href="p%20q/r1/steps/s/clip.mp4">clip.mp4</a>' in page  # not an image: a link, no player
    assert '<a href="p%20q/r1/report.html">report.html</a>' in page
    assert '<a href="../multirun/s/grid.html">grid.html</a>' in page
    assert (
        "2 created, 1 reused, 1.5 s predict time, estimated cost 0.0350" in page
        and "2026-01-02 03:04:05" in page
    )
    assert "sweep of 1 job" in page and "the search stopped early" in page
    assert page.index("r1") < page.index("multirun")  # newest first; never-started last
    assert page.rindex("outputs/bad") > page.index("multirun")
    assert '<option value="">all</option><option value="">(unknown) (1)</option>' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
