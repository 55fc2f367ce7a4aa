"""index.html and compare.html in a real headless Chromium: thumbnails load, the filters filter, every
link leads to a file that exists, nothing is logged as an error and nothing is asked of the network.
Screenshots are saved in the test's temporary folder (``screenshots/``) to be looked at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from kkiai_pipeline.runs_cli import main

from ..report.browser import CHROMIUM, FLAGS, check_page, require_chromium
from .conftest import Home

# Every image scrolled into view (they are lazy), then: how each one did, and every link's target.
_SCROLL = "() => { for (const i of document.images) i.scrollIntoView(); window.scrollTo(0, 0); }"
_LOADED = "() => Array.from(document.images).every(i => i.complete)"
_STATE = """() => ({
  images: Array.from(document.images).map(i => ({src: i.src, ok: i.naturalWidth > 0, lazy: i.loading})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
})"""
_VISIBLE = "() => Array.from(document.querySelectorAll('.card')).filter(c => !c.hidden).map(c => c.dataset.status + ' ' + c.dataset.pipeline)"


@pytest.fixture(autouse=True)
def chromium() -> None:
    require_chromium()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[tuple[Any, list[str]]]:
    """A page in a fresh profile, and the console errors and non-file requests it gets."""
    from playwright.sync_api import sync_playwright

    trouble: list[str] = []
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: trouble.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: trouble.append(f"page error: {e}"))
            page.on(
                "request", lambda r: None if r.url.startswith(("file:", "data:")) else trouble.append(r.url)
            )
            yield page, trouble
        finally:
            context.close()


def to_file(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(unquote(parsed.path))


def test_the_index_filters_loads_its_thumbnails_and_links_to_files(
    home: Home, tmp_path: Path, browser_page: tuple[Any, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home.root)
    assert main(["--json"]) == 0  # writes outputs/index.html
    page, trouble = browser_page
    shots = tmp_path / "screenshots"
    page.goto((home.outputs / "index.html").as_uri(), wait_until="load")
    page.screenshot(path=str(shots / "index-all.png"), full_page=True)
    page.evaluate(_SCROLL)
    page.wait_for_function(_LOADED)
    state = page.evaluate(_STATE)
    # a, b, c: their cutout; the sweep: each job's (the failed and the crashed run have none)
    assert len(state["images"]) == 5
    assert [i for i in state["images"] if not i["ok"] or i["lazy"] != "lazy"] == []
    targets = {to_file(url) for url in state["links"]}
    assert [t for t in targets if not t.is_file()] == []
    assert {home.a / "report.html", home.sweep / "grid.html", home.failed / "report.html"} <= targets
    assert len(page.evaluate(_VISIBLE)) == 8
    page.select_option("#f-status", "unreadable")
    assert page.evaluate(_VISIBLE) == ["unreadable "]
    page.select_option("#f-status", "")
    page.select_option("#f-pipeline", "old_one")
    assert page.evaluate(_VISIBLE) == ["succeeded old_one"]
    assert page.inner_text("#shown") == "1"
    page.select_option("#f-pipeline", "product_shots")
    page.select_option("#f-status", "failed")
    assert page.evaluate(_VISIBLE) == ["failed product_shots"]
    page.screenshot(path=str(shots / "index-failed.png"), full_page=True)
    assert trouble == []


def test_the_compare_page_shows_both_runs_outputs_step_by_step(home: Home, tmp_path: Path) -> None:
    out = tmp_path / "here" / "compare.html"
    out.parent.mkdir()
    assert main(["--compare", str(home.a), str(home.failed), "--out", str(out)]) == 0
    seen = check_page(out, screenshot=tmp_path / "compare.png", profile=tmp_path / "profile")
    assert (seen.broken, seen.console_errors, seen.outside_requests) == ([], [], [])
    assert seen.images == 4  # A: generate 2, cleanup 1, cutout 1; the failed run: none
    text = out.read_text(encoding="utf-8")
    assert "a vase [sandbox:fail]" in text and "pipeline.params.subject" in text
