"""report.html's accounting: totals and estimated cost, logs (collapsed, escaped), foreach items."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.pricing import Price
from kkiai_pipeline.report import write_run_report, write_sweep_grid
from kkiai_pipeline.report.items import MAX_ITEMS_SHOWN
from kkiai_pipeline.rundir import RunRecord, StepRecord, read_record

from .factories import StepSpec, make_run, make_sweep, picture

EVIL = "<script>alert('x')</script>"


def fanned_run(run_dir: Path, *, items: int = 3) -> RunRecord:
    """generate (paid, with logs), then cutout over 3 items: paid, reused, failed."""
    make_run(run_dir, {"generate": StepSpec(), "cutout": StepSpec(model="cjwbw/rembg", outputs=())})
    record = read_record(run_dir).record
    assert record is not None
    record.prices = {"stability-ai/sdxl": Price(per_second=0.1), "cjwbw/rembg": Price(per_prediction=0.25)}
    (run_dir / "steps/generate/logs.txt").write_text(f"Using seed: 7\n{EVIL}\n", encoding="utf-8")
    record.steps["generate"].logs = "steps/generate/logs.txt"
    cutout = record.steps["cutout"]
    cutout.items = []
    for i in range(items):
        item = StepRecord("cjwbw/rembg", "v", status="succeeded", index=i, item=f"photo {i} {EVIL}")
        item.input, item.prediction_id = {"image": f"steps/generate/output_{i}.png"}, f"pred-item-{i}"
        item.obtained, item.metrics = ("reused" if i == 1 else "created"), {"predict_time": 1.0}
        if i == 2:
            item.status, item.error, item.obtained = "failed", f"E1000 {EVIL}", None
        else:
            rel = f"steps/cutout/{i}/output_0.png"
            picture(run_dir / rel, "image/png", color=(200, 40 * i, 90))
            item.outputs = [Artifact(rel, f"http://127.0.0.1:9/f/{i}", "0" * 64, 1, "image/png")]
        cutout.items.append(item)
    record.save()
    return record


def test_the_summary_and_each_step_show_what_was_paid_and_its_estimated_cost(tmp_path: Path) -> None:
    fanned_run(tmp_path / "run")
    page = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    # generate: 2.5 s at 0.1/s; cutout: one item paid at 0.25 (one reused, one failed)
    assert '<th>predictions</th><td class="value">2 paid for, 1 reused</td>' in page
    assert "3.50 s paid for" in page
    assert "0.5000 (from the prices in the config)" in page
    costs = re.findall(r"<th>estimated cost</th><td class=\"value\">([^<]*)</td>", page)
    assert costs == ["0.5000 (from the prices in the config)", "0.2500", "0.2500"]


def test_logs_are_collapsed_escaped_and_linked(tmp_path: Path) -> None:
    fanned_run(tmp_path / "run")
    page = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    assert '<details class="logs"><summary>logs (2 lines, <a href="steps/generate/logs.txt">' in page
    assert "Using seed: 7\n&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;\n</pre></details>" in page
    assert "<script" not in page


def test_a_foreach_step_shows_each_item(tmp_path: Path) -> None:
    fanned_run(tmp_path / "run")
    page = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="item (\w+)">(.*?)</tr>', page)
    assert [status for status, _ in rows] == ["succeeded", "succeeded", "failed"]
    for i, (_, row) in enumerate(rows):
        assert f"cutout[{i}]" in row and f"photo {i} &lt;script&gt;" in row
        assert f"steps/generate/output_{i}.png" in row and f"pred-item-{i}" in row
    assert 'src="steps/cutout/0/output_0.png"' in rows[0][1]
    assert "reused" in rows[1][1] and "E1000 &lt;script&gt;" in rows[2][1]


def test_a_long_foreach_shows_its_first_items_and_says_so(tmp_path: Path) -> None:
    fanned_run(tmp_path / "run", items=MAX_ITEMS_SHOWN + 5)
    page = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    assert len(re.findall(r'<tr class="item ', page)) == MAX_ITEMS_SHOWN
    assert f"showing the first {MAX_ITEMS_SHOWN} of {MAX_ITEMS_SHOWN + 5} items; run.json has all" in page


def test_a_run_without_prices_or_logs_says_nothing_about_cost(tmp_path: Path) -> None:
    make_run(tmp_path / "run", {"generate": StepSpec()})
    page = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "estimated cost" not in page and "<details" not in page
    assert "1 paid for, 0 reused" in page


def test_the_grid_shows_one_or_several_steps_per_cell_in_both_files(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", ["seed=1,2"], [{"seed": "1"}, {"seed": "2"}], failing={1: "failed"})
    html_path, png_path = write_sweep_grid(root, step="generate")  # grid_step=generate, as before
    one = html_path.read_text(encoding="utf-8")
    with Image.open(png_path) as picture:
        narrow = picture.size
    write_sweep_grid(root, step=["generate", "upscale"])
    two = html_path.read_text(encoding="utf-8")
    with Image.open(png_path) as picture:
        wide = picture.size
    assert one.count('<div class="cellrow">') == 0 and one.count('class="lightbox"') == 1
    assert two.count('<div class="cellrow">') == 2 and two.count('class="lightbox"') == 2  # job 1 failed
    assert '<figcaption class="mono">upscale</figcaption>' in two and "steps: generate, upscale" in two
    assert "upscale: " not in one and two.count('<td class="bad" ') == 1
    assert wide[1] == narrow[1] and wide[0] > narrow[0] + 2 * 48  # a second picture per column
