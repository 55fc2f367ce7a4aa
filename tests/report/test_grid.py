"""grid.html and grid.png for 1, 2 and 3 swept keys, failed cells, missing files and odd outputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from PIL import Image

from kkiai_pipeline.report import write_sweep_grid

from .factories import make_sweep, picture

SUBJECT = "pipeline.params.subject"
SCALE = "pipeline.steps.generate.input.guidance_scale"
SURFACE = "pipeline.params.surface"
RED = (0xCF, 0x22, 0x2E)  # the failed cells' border


def sweep(tmp_path: Path, keys: int, **kwargs: object) -> Path:
    values = {SUBJECT: ["a\\ mug", "a\\ vase"], SCALE: ["5", "9"], SURFACE: ["marble", "slate"]}
    chosen = list(values)[:keys]
    jobs: list[dict[str, str]] = [{}]
    for key in chosen:
        jobs = [{**job, key: value} for job in jobs for value in values[key]]
    task = [f"{key}={','.join(values[key])}" for key in chosen]
    return make_sweep(tmp_path / "sweep", ["pipeline=demo", *task, "cache=false"], jobs, **kwargs)  # type: ignore[arg-type]


def html_of(root: Path, **kwargs: object) -> str:
    html_path, png_path = write_sweep_grid(root, **kwargs)  # type: ignore[arg-type]
    assert (html_path, png_path) == (root / "grid.html", root / "grid.png")
    with Image.open(png_path) as image:
        image.verify()
    return html_path.read_text(encoding="utf-8")


def red_pixels(png: Path) -> int:
    with Image.open(png) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
    return sum(count for count, rgb in colors if rgb == RED)


def sources(page: str) -> list[str]:
    return re.findall(r'<img class="thumb" src="([^"]*)"', page)


def test_one_key_is_one_row_of_columns(tmp_path: Path) -> None:
    page = html_of(sweep(tmp_path, 1))
    assert page.count('<table class="grid">') == 1
    assert "<th>subject = a mug</th><th>subject = a vase</th>" in page
    assert sources(page) == ["0/steps/upscale/output_0.png", "1/steps/upscale/output_0.png"]


def test_two_keys_are_columns_and_rows(tmp_path: Path) -> None:
    root = sweep(tmp_path, 2)
    page = html_of(root)
    assert page.count('<table class="grid">') == 1
    assert (
        "<tr><th>guidance_scale \\ subject</th><th>subject = a mug</th><th>subject = a vase</th></tr>" in page
    )
    assert "<tr><th>guidance_scale = 5</th>" in page and "<tr><th>guidance_scale = 9</th>" in page
    # rows are Y (guidance_scale), columns X (subject): row 1 holds jobs 1 and 3
    assert sources(page) == [f"{job}/steps/upscale/output_0.png" for job in (0, 2, 1, 3)]
    with Image.open(root / "grid.png") as image:
        assert image.width > 2 * 256 and image.height > 2 * 256


def test_three_keys_give_one_grid_per_third_value(tmp_path: Path) -> None:
    root = sweep(tmp_path, 3)
    page = html_of(root)
    assert page.count('<table class="grid">') == 2
    assert "<h2>surface = marble</h2>" in page and "<h2>surface = slate</h2>" in page
    assert len(sources(page)) == 8
    with Image.open(root / "grid.png") as image:
        assert image.height > 4 * 256  # two blocks of two rows, stacked


def test_labels_name_only_what_varies(tmp_path: Path) -> None:
    page = html_of(sweep(tmp_path, 2))
    headers = re.findall(r"<th>([^<]*)</th>", page)
    assert not [h for h in headers if "pipeline" in h or "cache" in h]
    assert 'the same in every job: <span class="mono">pipeline=demo, cache=False</span>' in page
    assert '<td class="mono muted">pipeline.params.subject</td>' in page  # the legend names the full key


def test_failed_cells_are_marked_in_both(tmp_path: Path) -> None:
    clean = sweep(tmp_path / "clean", 2)
    html_of(clean)
    assert red_pixels(clean / "grid.png") == 0
    root = sweep(tmp_path / "failing", 2, failing={1: "failed", 3: "canceled"}, no_run=[2])
    page = html_of(root)
    assert page.count('<td class="bad" ') == 3
    assert "generate failed: E1000 boom" in page  # the cause, not only the skipped step's note
    assert "<strong>canceled</strong>" in page and "<strong>failed</strong>" in page
    assert "no run.json (the run did not start)" in page
    assert "1 failed" not in page and "3 failed" in page
    assert red_pixels(root / "grid.png") > 3 * 4 * 200  # three cells with a 4 px border


def test_missing_output_files_are_placeholders(tmp_path: Path) -> None:
    root = sweep(tmp_path, 1)
    (root / "1/steps/upscale/output_0.png").unlink()
    page = html_of(root)
    assert sources(page) == ["0/steps/upscale/output_0.png"]
    assert "missing file steps/upscale/output_0.png" in page


def test_a_video_is_played_in_the_page_and_a_placeholder_in_the_picture(tmp_path: Path) -> None:
    root = sweep(tmp_path, 1)
    manifest = json.loads((root / "0/run.json").read_text())
    manifest["steps"]["upscale"]["outputs"][0].update(path="steps/upscale/clip.mp4", content_type="video/mp4")
    (root / "0/run.json").write_text(json.dumps(manifest))
    picture(root / "0/steps/upscale/clip.mp4", "video/mp4", color=(0, 0, 0))
    page = html_of(root)
    assert '<video class="thumb" src="0/steps/upscale/clip.mp4"' in page


def test_an_unreadable_image_is_a_placeholder_in_the_picture(tmp_path: Path) -> None:
    root = sweep(tmp_path, 1)
    (root / "0/steps/upscale/output_0.png").write_bytes(b"\x89PNG broken")
    html_of(root)


def test_the_chosen_step_and_a_step_a_job_lacks(tmp_path: Path) -> None:
    root = sweep(tmp_path, 1)
    assert sources(html_of(root, step="generate")) == [
        "0/steps/generate/output_0.png",
        "1/steps/generate/output_0.png",
    ]
    page = html_of(root, step="nope")
    assert sources(page) == []
    assert page.count("no step &#x27;nope&#x27; in run.json") == 2


def test_max_cells_limits_the_jobs_drawn(tmp_path: Path) -> None:
    page = html_of(sweep(tmp_path, 2), max_cells=3)
    assert len(sources(page)) == 3
    assert "showing the first 3 of 4 jobs (max_cells)" in page


def test_paths_are_relative_and_survive_a_move(tmp_path: Path) -> None:
    root = sweep(tmp_path, 2)
    page = html_of(root)
    moved = tmp_path / "archive" / "my sweep"
    shutil.move(root, moved)
    for src in sources(page):
        assert (moved / src).is_file()
    assert str(tmp_path) not in page


def test_values_are_escaped(tmp_path: Path) -> None:
    jobs = [{SUBJECT: "<script>alert(1)</script>"}, {SUBJECT: "a & b"}]
    page = html_of(make_sweep(tmp_path / "sweep", [f"{SUBJECT}=x,y"], jobs))
    assert "<script" not in page
    assert "subject = &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "subject = a &amp; b" in page


def test_an_empty_or_missing_sweep_does_not_raise(tmp_path: Path) -> None:
    tmp_path.joinpath("empty").mkdir()
    assert "no numbered job directories" in html_of(tmp_path / "empty")
    single = make_sweep(tmp_path / "one", [], [{}])
    assert len(sources(html_of(single))) == 1


def test_many_cells_keep_the_picture_bounded(tmp_path: Path) -> None:
    jobs = [{"seed": str(i)} for i in range(60)]
    root = make_sweep(tmp_path / "sweep", ["seed=range(60)"], jobs, no_run=range(60))
    html_of(root)
    with Image.open(root / "grid.png") as image:
        assert image.width <= 13_000


def test_an_unresolved_job_is_marked_like_a_failed_one(tmp_path: Path) -> None:
    root = sweep(tmp_path, 1, failing={1: "unresolved"})
    page = html_of(root)
    assert page.count('<td class="bad" ') == 1
    assert "<strong>unresolved</strong>" in page
    assert "generate unresolved: E1000 boom" in page
    assert "1 failed" in page
    assert red_pixels(root / "grid.png") > 4 * 200
