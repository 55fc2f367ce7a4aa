"""report.html: escaping, relative paths, media, failed and skipped steps, odd run directories."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from kkiai_pipeline.report import write_run_report
from kkiai_pipeline.rundir import read_record

from .factories import StepSpec, make_run

EVIL = "<script>alert('x')</script> & \"quotes\""


def attributes(page: str, name: str) -> list[str]:
    return re.findall(rf'\b{name}="([^"]*)"', page)


def three_steps(run_dir: Path) -> Path:
    return make_run(
        run_dir,
        {
            "generate": StepSpec(outputs=("image/png", "image/jpeg")),
            "animate": StepSpec(depends_on=["generate"], outputs=("image/gif",), animated=True),
            "clip": StepSpec(depends_on=["generate"], outputs=("image/webp", "video/mp4"), animated=True),
        },
    )


def test_the_report_is_written_in_the_run_directory(tmp_path: Path) -> None:
    run_dir = three_steps(tmp_path / "run")
    assert write_run_report(run_dir) == run_dir / "report.html"
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    for sid in ("generate", "animate", "clip"):
        assert f"<h3>{sid}</h3>" in page
    assert "pred-generate" in page
    assert "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc" in page
    assert "2.50 s" in page  # ran: started_at -> completed_at
    assert "metrics.predict_time" in page


def test_user_text_is_escaped_everywhere(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path / "run",
        {
            "gen<b>": StepSpec(input={"prompt": EVIL, f"k{EVIL}": 1}, model=f"o/m{EVIL}"),
            "bad": StepSpec(status="failed", error=f"E1 {EVIL}", depends_on=["gen<b>"]),
        },
        status="failed",
        pipeline=f"p{EVIL}",
    )
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert "<script" not in page
    assert "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "gen&lt;b&gt;" in page


def test_files_are_referenced_relatively_and_survive_a_move(tmp_path: Path) -> None:
    run_dir = three_steps(tmp_path / "run")
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    sources = attributes(page, "src")
    assert sources == [
        "steps/generate/output_0.png",
        "steps/generate/output_1.jpg",
        "steps/animate/output_0.gif",
        "steps/clip/output_0.webp",
        "steps/clip/output_1.mp4",
    ]
    moved = tmp_path / "elsewhere" / "moved run"
    shutil.move(run_dir, moved)
    for src in sources:
        assert (moved / src).is_file()
    assert str(tmp_path) not in " ".join(sources + attributes(page, "href"))


def test_file_names_are_url_quoted(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", {"a b#c": StepSpec()})
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert attributes(page, "src") == ["steps/a%20b%23c/output_0.png"]


def test_images_animations_and_videos(tmp_path: Path) -> None:
    page = write_run_report(three_steps(tmp_path / "run")).read_text(encoding="utf-8")
    assert page.count("<img ") == 4  # png, jpeg, gif and webp animations play as images
    assert '<video class="thumb" src="steps/clip/output_1.mp4" controls muted loop' in page


def test_nothing_outside_is_loaded(tmp_path: Path) -> None:
    page = write_run_report(three_steps(tmp_path / "run")).read_text(encoding="utf-8")
    assert "<script" not in page
    assert "@import" not in page
    assert re.findall(r"url\((?!#)", page) == []  # only the DAG's arrow marker, in the page itself
    for value in attributes(page, "src") + attributes(page, "href"):
        assert not re.match(r"^[a-z]+:", value) or value == "data:,", value


def test_long_prompts_wrap_and_data_uris_are_shortened(tmp_path: Path) -> None:
    prompt = " ".join(["a very detailed studio photo"] * 40)
    data_uri = "data:image/png;base64," + "A" * 5000
    run_dir = make_run(tmp_path / "run", {"gen": StepSpec(input={"prompt": prompt, "image": data_uri})})
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert f'<td class="value">{prompt}</td>' in page
    assert ".value{white-space:pre-wrap;overflow-wrap:anywhere" in page
    assert "AAAA" not in page
    assert "data:image/png;base64,… (5022 chars)" in page


def test_an_input_from_an_earlier_step_links_to_its_file(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path / "run",
        {
            "gen": StepSpec(),
            "cut": StepSpec(depends_on=["gen"], input={"image": "http://127.0.0.1:9/files/gen/out-0"}),
        },
    )
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert '<a href="steps/gen/output_0.png">output 0 of gen</a>' in page


def test_failed_and_skipped_steps_stand_out_with_their_error(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path / "run",
        {
            "gen": StepSpec(status="failed", error="E1000 Prediction failed (no GPU)"),
            "cut": StepSpec(
                status="skipped", depends_on=["gen"], error="skipped: dependency 'gen' did not succeed"
            ),
        },
        status="failed",
    )
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert '<section id="step-0" class="step bad">' in page
    assert '<div class="error">E1000 Prediction failed (no GPU)</div>' in page
    assert '<section id="step-1" class="step skipped">' in page
    assert '<div class="error skipnote">skipped: dependency &#x27;gen&#x27; did not succeed</div>' in page
    assert "nothing was sent" in page
    assert "1 failed, 1 skipped" in page


def test_a_missing_output_file_is_a_placeholder_not_a_broken_image(tmp_path: Path) -> None:
    run_dir = three_steps(tmp_path / "run")
    (run_dir / "steps/generate/output_0.png").unlink()
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert "steps/generate/output_0.png" not in attributes(page, "src")
    assert "<strong>missing file</strong>" in page


def test_an_output_that_is_no_picture_is_linked(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", {"gen": StepSpec(outputs=())})
    record = json.loads((run_dir / "run.json").read_text())
    record["steps"]["gen"]["outputs"] = [
        {"path": "steps/gen/out.bin", "url": "", "sha256": "", "bytes": 3, "content_type": "application/zip"}
    ]
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / "steps/gen").mkdir(parents=True)
    (run_dir / "steps/gen/out.bin").write_bytes(b"abc")
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert '<strong>not an image</strong><span><a href="steps/gen/out.bin">' in page


def test_a_run_without_run_json_still_gets_a_page(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    page = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "no run.json (the run did not start)" in page


def test_odd_run_json_contents_do_not_raise(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    odd = [
        "not json",
        "[1, 2]",
        json.dumps({"steps": []}),
        json.dumps({"steps": {"a": None, "b": {"outputs": [None, {"path": 3}], "depends_on": "a"}}}),
        json.dumps(
            {"status": "running", "steps": {"a": {"status": "running", "input": {"x": [1, {"y": None}]}}}}
        ),
        json.dumps(
            {"started_at": "yesterday", "finished_at": 5, "steps": {"a": {"depends_on": ["a", "zz"]}}}
        ),
    ]
    for text in odd:
        (run_dir / "run.json").write_text(text)
        assert write_run_report(run_dir).is_file()


def test_how_each_result_was_obtained_and_why(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path / "run",
        {
            "gen": StepSpec(obtained="reused", note="reused: the same input was stored by an earlier run"),
            "cut": StepSpec(depends_on=["gen"]),
        },
    )
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert '<tr><th>obtained</th><td class="value">reused</td></tr>' in page
    assert '<tr><th>obtained</th><td class="value">created</td></tr>' in page
    assert (
        '<tr><th>note</th><td class="value">reused: the same input was stored by an earlier run</td></tr>'
        in page
    )
    assert page.count("<th>note</th>") == 1  # only a step with a note shows the row
    assert '<tr><th>took</th><td class="value">2.75 s</td></tr>' in page  # started -> ended
    assert "<th>cache</th>" not in page


def test_an_unresolved_step_stands_out_like_a_failure(tmp_path: Path) -> None:
    error = "the create was sent, its answer lost: nothing is sent again until the service can tell"
    run_dir = make_run(
        tmp_path / "run",
        {
            "gen": StepSpec(status="unresolved", error=error, obtained=None),
            "cut": StepSpec(
                status="skipped", depends_on=["gen"], error="skipped: dependency 'gen' did not succeed"
            ),
        },
        status="failed",
    )
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert '<section id="step-0" class="step bad">' in page
    assert '<span class="badge" style="background:#ffebe9;color:#cf222e">unresolved</span>' in page
    assert f'<div class="error">{error}</div>' in page
    assert "1 unresolved, 1 skipped" in page


def test_a_crashed_run_shows_the_journal_s_last_word(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", {"gen": StepSpec(status="pending", input=None, outputs=())})
    crashed = read_record(run_dir).record
    assert crashed is not None
    crashed.status = "running"
    crashed.save()
    snapshot = (run_dir / "run.json").read_text()
    crashed.steps["gen"].start()
    crashed.note("gen")  # journaled at once; run.json only now and then
    assert crashed._journal is not None
    crashed._journal.close()  # the run "crashes" with the last snapshot saying pending
    (run_dir / "run.json").write_text(snapshot)
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert (
        '<header><h3>gen</h3><span class="badge" style="background:#ddf4ff;color:#0969da">running</span>'
        in page
    )


def test_what_was_set_aside_in_run_json_is_said(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", {"gen": StepSpec()})
    record = json.loads((run_dir / "run.json").read_text())
    record["steps"]["gen"]["status"] = "queued"
    record["steps"]["gen"]["depends_on"] = "a"
    (run_dir / "run.json").write_text(json.dumps(record))
    page = write_run_report(run_dir).read_text(encoding="utf-8")
    assert (
        '<div class="error">run.json: steps.gen.depends_on: &#x27;a&#x27; is not a list; steps.gen.status: '
        "&#x27;queued&#x27; is not one of pending, running, succeeded, failed, canceled, aborted, skipped, "
        "unresolved</div>"
    ) in page
    assert "<h3>gen</h3>" in page
