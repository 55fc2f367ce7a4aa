"""The corpus of bad inputs: each is refused with its exact message, exit code 2, and no request at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

from .integration import kkiai_run

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "bad_inputs" / "cases.yaml").read_text()
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0)) as running:
        yield running


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({case["id"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_is_refused_before_any_request(case: dict[str, Any], tmp_path: Path, sandbox: Any) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    source = folder / f"{case['id']}.yaml"
    if "pipeline" in case:
        source.write_text(case["pipeline"])
    for name, content in case.get("files", {}).items():  # a size (of NUL bytes) or the text
        if isinstance(content, str):
            (folder / name).write_text(content)
        else:
            (folder / name).write_bytes(b"\0" * content)
    args = case.get("args", [f"pipeline={case['id']}"])
    kwargs = {"token": case["token"]} if "token" in case else {}
    before = sandbox.stats()["requests"]

    result = kkiai_run(*args, f"api.base_url={sandbox.base_url}", cwd=tmp_path, **kwargs)

    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    for expected in case.get("expect", []):
        assert expected.replace("{file}", str(source.resolve())) in lines, result.stderr
    for expected in case.get("expect_contains", []):
        assert expected in result.stderr, result.stderr
    assert sandbox.stats()["requests"] == before
