"""Run the hostile corpus: every case exits 2 with its exact problem line, no traceback, no request."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

from ..integration import kkiai_run
from .cases import CASES, LAUGHS, Case


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0)) as running:
        yield running


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 80
    assert len({case.id for case in CASES}) == len(CASES)


def write_case(case: Case, folder: Path) -> Path:
    """Lay out ``case`` in ``folder``; returns the pipeline file's path."""
    folder.mkdir()

    def name(text: str) -> str:
        return text.replace("{id}", case.id).replace("{dir}", str(folder))

    source = folder / f"{case.id}.yaml"
    if isinstance(case.pipeline, bytes):
        source.write_bytes(case.pipeline)
    elif case.pipeline is not None:
        source.write_text(case.pipeline, encoding="utf-8")
    for file, data in case.files.items():
        (folder / file).write_bytes(data)
    for link, target in case.links.items():
        (folder / name(link)).symlink_to(name(target))
    for fifo in case.fifos:
        os.mkfifo(folder / name(fifo))
    for directory in case.dirs:
        (folder / name(directory)).mkdir()
    return source


def expected_line(case: Case, folder: Path) -> re.Pattern[str]:
    text = "  - " + case.expect
    for key, value in {
        "{file}": folder / f"{case.id}.yaml",
        "{dir}": folder,
        "{parent}": folder.parent,
    }.items():
        text = text.replace(key, str(value))
    return re.compile(".*".join(re.escape(part) for part in text.split("{*}")))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input_is_refused_before_any_request(case: Case, tmp_path: Path, sandbox: Any) -> None:
    folder = tmp_path / "pipelines"
    write_case(case, folder)
    before = sandbox.stats()["requests"]

    result = kkiai_run(f"pipeline={case.id}", f"api.base_url={sandbox.base_url}", *case.args, cwd=tmp_path)

    assert result.code == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    pattern = expected_line(case, folder)
    assert any(pattern.fullmatch(line) for line in result.stderr.splitlines()), result.stderr[-3000:]
    assert sandbox.stats()["requests"] == before


def test_a_broken_pipeline_never_affects_another(tmp_path: Path) -> None:
    """Hostile neighbours in the search path are known by name only: the good pipeline runs."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "good.yaml").write_text(
        "name: good\nsteps:\n  a: {model: cjwbw/rembg, input: {image: 'https://x/y.png'}}\n"
    )
    (folder / "laughs.yaml").write_text("name: p\n" + LAUGHS)
    (folder / "broken.yaml").write_text("steps:\n  a: [\n")
    (folder / "huge.yaml").write_bytes(b"a: " + b"x" * 50_000_000)
    (folder / "dir.yaml").mkdir()
    os.mkfifo(folder / "fifo.yaml")
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")

    result = kkiai_run("pipeline=good", "api=sandbox", "dry_run=true", cwd=tmp_path, token=None)

    assert result.code == 0, result.stderr
    assert "Plan for pipeline 'good'" in result.stdout
