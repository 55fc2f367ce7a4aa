"""``kkiai-runs`` over a thousand runs: how much the listing and index.html cost beyond reading run.json.

Run it with ``python -m benchmarks.runs_listing`` (``--runs N``). One real run of the shipped
``product_shots`` pipeline is made on the sandbox (in-process, Python API); its directory is copied N
times (with a sweep of N/10 jobs made of the same copies), then three things are timed in this process:

- the baseline: :func:`kkiai_pipeline.rundir.read_record` of every run, nothing else;
- the listing: ``entries()`` (the search, every run read, totals, final outputs checked on disk);
- the listing plus ``index.html`` (``kkiai-runs`` without ``--json``).

It prints each time, their ratios to the baseline, and the size of index.html per card. With
``--browser`` it also opens index.html in headless Chromium (as the tests do) next to the same page with
its thumbnails loaded eagerly, and prints how long each took to its load event and how many images
each had loaded by then.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import kkiai_pipeline
from kkiai_pipeline.report.index_html import write_index
from kkiai_pipeline.rundir import read_record
from kkiai_pipeline.runs_index import entries, find

FAST = ["api=sandbox", "api.sandbox.queue_seconds=0.01", "api.sandbox.predict_seconds=0.01"]


def _best(call: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--browser", action="store_true", help="also time index.html in headless Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = kkiai_pipeline.run(
            "product_shots", overrides=[*FAST, f"cache_dir={root / 'cache'}", f"hydra.run.dir={root / 'one'}"]
        ).run_dir
        jobs = args.runs // 10
        for n in range(args.runs - jobs):
            shutil.copytree(first, root / "outputs" / "product_shots" / f"run-{n:05d}")
        sweep = root / "multirun" / "s"
        for n in range(jobs):
            shutil.copytree(first, sweep / str(n))
        (sweep / "sweep.json").write_text('{"status": "succeeded", "exit_code": 0, "jobs": []}')
        roots = [root / "outputs", root / "multirun"]
        runs = find(roots).runs + [sweep / str(n) for n in range(jobs)]
        baseline = _best(lambda: [read_record(r) for r in runs])
        listing = _best(lambda: entries(roots))
        listed, _ = entries(roots)
        index = root / "outputs" / "index.html"
        both = _best(lambda: write_index(index, entries(roots)[0]))
        size = index.stat().st_size
        if args.browser:
            eager = index.with_name("index-eager.html")
            eager.write_text(index.read_text(encoding="utf-8").replace('loading="lazy"', 'loading="eager"'))
            lazy_s, lazy_n = _open(index, root / "profile-lazy")
            eager_s, eager_n = _open(eager, root / "profile-eager")
    made = f"{args.runs - jobs} runs, one sweep of {jobs} jobs"
    print(f"{len(runs)} run directories ({made}): {len(listed)} rows")
    print(f"read_record of every run (baseline)   {baseline:7.3f} s   1.00")
    print(f"entries() (the listing)               {listing:7.3f} s   {listing / baseline:4.2f}")
    print(f"entries() + index.html                {both:7.3f} s   {both / baseline:4.2f}")
    print(f"index.html: {size / 1e6:.2f} MB, {size / len(listed):.0f} bytes a card")
    if args.browser:
        print(
            f"Chromium, thumbnails eager (baseline)  {eager_s:7.3f} s to load, {eager_n} images loaded   1.00"
        )
        lazy = f"{lazy_s:7.3f} s to load, {lazy_n} images loaded"
        print(f"Chromium, thumbnails lazy (index.html) {lazy}   {lazy_s / eager_s:4.2f}")


def _open(page_file: Path, profile: Path) -> tuple[float, int]:
    """Seconds from navigation to the load event, and the images loaded by then."""
    from playwright.sync_api import sync_playwright

    from tests.report.browser import CHROMIUM, FLAGS

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
            start = time.perf_counter()
            page.goto(page_file.as_uri(), wait_until="load")
            took = time.perf_counter() - start
            loaded = page.evaluate(
                "() => Array.from(document.images).filter(i => i.complete && i.naturalWidth).length"
            )
        finally:
            context.close()
    return took, int(loaded)


if __name__ == "__main__":
    main()
