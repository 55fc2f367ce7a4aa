"""In headless Chromium: a grid with two steps per cell whose pictures open full size, and a report
with a foreach step's items and collapsed logs. Screenshots go to the test's ``screenshots/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kkiai_pipeline.report import write_run_report, write_sweep_grid

from .browser import check_page, require_chromium
from .factories import make_sweep
from .test_accounting_report import fanned_run

OPEN_STATE = """async () => {
  const box = document.querySelector('.lightbox:target');
  if (!box) return null;
  const full = box.querySelector('img.full');
  if (!full.complete) await new Promise(done => { full.onload = full.onerror = done; });
  const rect = full.getBoundingClientRect();
  return {id: box.id, shown: getComputedStyle(box).display, width: rect.width, height: rect.height,
          natural: full.naturalWidth, url: full.src};
}"""


@pytest.fixture(autouse=True)
def chromium() -> None:
    require_chromium()


def test_a_grid_cell_shows_two_steps_and_opens_each_picture_full_size(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", ["seed=1,2"], [{"seed": "1"}, {"seed": "2"}])
    Image.new("RGB", (2400, 1600), (200, 90, 40)).save(root / "0/steps/generate/output_0.png")
    html_path, _ = write_sweep_grid(root, step=["generate", "upscale"])

    def open_and_close(page: Any) -> dict[str, Any]:
        page.click('a[href="#full-0-0"]')  # job 0's first step: larger than the window
        large = page.evaluate(OPEN_STATE)
        page.click("#full-0-0 .shut")
        page.click('a[href="#full-1-1"]')  # job 1's second step
        opened = page.evaluate(OPEN_STATE)
        page.screenshot(path=str(tmp_path / "screenshots" / "grid-full-size.png"))
        page.click("#full-1-1 .shut")
        return {
            "large": large,
            "opened": opened,
            "after": page.evaluate("() => [location.hash, !!document.querySelector('.lightbox:target')]"),
        }

    (tmp_path / "screenshots").mkdir()
    seen = check_page(
        html_path,
        screenshot=tmp_path / "screenshots" / "grid-2-steps.png",
        profile=tmp_path / "profile",
        then=open_and_close,
    )
    assert (seen.broken, seen.console_errors, seen.outside_requests) == ([], [], [])
    assert seen.images == 4  # two jobs, two steps each
    opened = seen.then["opened"]
    assert opened["id"] == "full-1-1" and opened["shown"] == "block"
    assert opened["url"].endswith("/sweep/1/steps/upscale/output_0.png")
    assert (opened["natural"], opened["width"], opened["height"]) == (96, 96, 64)  # its own size
    assert seen.then["after"] == ["#job-1", False]  # closed, back at the cell
    large = seen.then["large"]
    assert large["natural"] == 2400 and 1000 < large["width"] <= 1280 - 32  # shrunk to the window
    assert large["width"] / large["height"] == pytest.approx(1.5, abs=0.01)


def test_a_report_with_foreach_items_and_logs_that_open(tmp_path: Path) -> None:
    fanned_run(tmp_path / "run")

    def open_logs(page: Any) -> Any:
        page.click("details.logs summary")
        return page.evaluate(
            "() => { const d = document.querySelector('details.logs');"
            " return [d.open, d.querySelector('pre').getBoundingClientRect().height > 0]; }"
        )

    (tmp_path / "screenshots").mkdir()
    seen = check_page(
        write_run_report(tmp_path / "run"),
        screenshot=tmp_path / "screenshots" / "report-items.png",
        profile=tmp_path / "profile",
        then=open_logs,
    )
    assert (seen.broken, seen.console_errors, seen.outside_requests) == ([], [], [])
    assert seen.images == 3  # generate's output and the two items that succeeded
    assert seen.then == [True, True]
