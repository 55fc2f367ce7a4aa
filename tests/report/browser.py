"""Open a page from ``file://`` in Debian's headless Chromium (driven by Playwright) and check it.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (CI installs Debian's
``chromium`` package). The page must load every image and video, log no console error, raise no
JavaScript error and ask for nothing but ``file:`` and ``data:`` URLs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: The machines have no network: nothing may try to reach it (quic, updates, sync, first-run fetches).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Lazy images the page does not show (a grid's full-size views, until opened) are not fetched: not counted.
_MEDIA_STATE = """() => ({
  images: Array.from(document.images).filter(i => i.loading !== 'lazy' || i.checkVisibility())
    .map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
  videos: Array.from(document.querySelectorAll('video')).map(v => ({src: v.getAttribute('src'), ok: v.readyState >= 1 && !v.error})),
})"""
_VIDEOS_SETTLED = (
    "() => Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1 || v.error)"
)


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    images: int = 0
    videos: int = 0
    broken: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    title: str = ""
    then: Any = None  # what the ``then`` step of check_page returned


def require_chromium() -> None:
    """Skip the calling test, with the reason, when the browser or its driver is not installed."""
    pytest.importorskip("playwright.sync_api", reason="the test dependency playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (CI installs it: apt-get install chromium)")


def check_page(
    page_file: Path, *, screenshot: Path, profile: Path, then: Callable[[Any], Any] | None = None
) -> PageCheck:
    """Open ``page_file`` headless with a fresh profile, check it, and save a full-page screenshot.

    ``then`` (given the Playwright page) runs after the checks, before the screenshot: a click, say;
    what it returns is kept in ``then``, and the screenshot is then of the viewport."""
    from playwright.sync_api import sync_playwright

    seen = PageCheck()
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.console_errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: seen.console_errors.append(f"request failed: {r.url}"))
            page.on("request", lambda r: _note_request(seen, r.url))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            page.wait_for_function(_VIDEOS_SETTLED)
            state = page.evaluate(_MEDIA_STATE)
            seen.title = page.title()
            if then is not None:
                seen.then = then(page)
            page.screenshot(path=str(screenshot), full_page=then is None)
        finally:
            context.close()
    seen.images, seen.videos = len(state["images"]), len(state["videos"])
    seen.broken = [m["src"] for m in state["images"] + state["videos"] if not m["ok"]]
    return seen


def _note_request(seen: PageCheck, url: str) -> None:
    if not url.startswith(("file:", "data:")):
        seen.outside_requests.append(url)
