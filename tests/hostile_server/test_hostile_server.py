"""Every hostile behaviour of ``cases.py`` against the real ``kkiai-run``: the step it hits ends cleanly
(a status and one clear error, no traceback) within its timeout, nothing is paid twice, nothing is sent
where the API's answers point, and no control character reaches stderr or run.log.

The cases run concurrently (each against its own fake API, in its own directory) in a module fixture;
each test then reads its case's outcome.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.prediction_logs import LOGS_FILE

from ..fakes.fake_api import Counters, FakeApi
from ..money.helpers import Result, command, environ, finish
from .cases import CASES, Case

PIPELINES = Path(__file__).parent / "pipelines"
STEP_TIMEOUT = 8
SETTINGS = (
    f"timeout={STEP_TIMEOUT}",
    "api.read_timeout=2",
    "api.connect_timeout=1",
    "api.max_attempts=3",
    "api.max_wait=0.2",
    "api.max_response_bytes=262144",
    "max_download_bytes=1000000",
)
ENDED = {"succeeded", "failed", "canceled", "aborted", "skipped", "unresolved"}
STORED = {".png", ".jpg", ".webp", ".gif", ".avif", ".mp4", ".webm", ".bin"}
# What must never reach a terminal or a log: C0 controls but tab and newline, DEL, C1 controls, and the
# invisible characters that reorder or split lines.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
WORKERS = 8


@dataclass(frozen=True)
class Outcome:
    """One case's run and what the fake API saw."""

    result: Result
    counters: Counters
    run_log: str


def run_case(case: Case, folder: Path) -> Outcome:
    folder.mkdir(parents=True)
    with FakeApi() as fake:
        fake.knobs.predict_seconds = 0.2
        if case.setup is not None:
            case.setup(fake)
        fake.knobs.rewrite = dict(case.rewrite(fake))
        env = environ() | {"KKIAI_PIPELINE_PATH": str(PIPELINES)}
        words = command(fake, folder, "pipeline=relay", *SETTINGS, *case.args, wait=case.wait, list_lag=0.5)
        process = subprocess.Popen(
            words, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        result = finish(process, folder / "run", timeout=90)
        log = folder / "run" / "run.log"
        return Outcome(result, fake.counters, log.read_text(errors="replace") if log.exists() else "")


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The outcome of every case selected in this session, run WORKERS at a time."""
    wanted = {
        str(item.callspec.params["case"].id)
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and hasattr(item, "callspec")
        and "case" in item.callspec.params
    }
    root = tmp_path_factory.mktemp("hostile")
    selected = [case for case in CASES if case.id in wanted]
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {case.id: pool.submit(run_case, case, root / case.id) for case in selected}
        found: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                found[name] = future.result()
            except Exception as exc:  # reported by the case's own test
                found[name] = exc
    yield found


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({case.what for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_hostile_server_ends_the_step_cleanly(case: Case, outcomes: dict[str, Any]) -> None:
    outcome = outcomes[case.id]
    if isinstance(outcome, Exception):
        raise outcome
    result, seen = outcome.result, outcome.counters
    explain = f"{case.what}\n{result.explain()}\nfake: {vars(seen)}"
    assert result.code in (0, 1), explain  # finished (a hang is -9), and not as a usage error
    assert "Traceback" not in result.stderr + outcome.run_log, explain
    for name, text in (("stderr", result.stderr), ("run.log", outcome.run_log)):
        found = CONTROL.search(text)
        assert found is None, f"{name} holds {found.group()!r}\n{explain}"
    assert not any(line.startswith("2024-01-01") for line in outcome.run_log.splitlines()), explain
    # nothing paid twice, nothing sent where answers point, no token sent to a file host
    assert seen.duplicates() == 0, explain
    assert seen.creates <= 3, explain
    assert (seen.stray, seen.file_gets_with_auth) == (0, 0), f"{seen.stray_paths}\n{explain}"
    manifest = result.manifest
    steps = manifest["steps"]
    assert {sid: step["status"] for sid, step in steps.items()} == dict(case.statuses), explain
    assert all(step["status"] in ENDED for step in steps.values())
    assert (result.run_dir / "run.json").stat().st_size < 1_000_000, explain
    if case.error is not None:
        failed = next(step for step in steps.values() if step["status"] not in ("succeeded", "skipped"))
        assert case.error in (failed["error"] or ""), f"error: {failed['error']!r}\n{explain}"
    if case.canceled:
        assert seen.cancels >= 1, explain
    for path in (result.run_dir / "steps").rglob("*"):
        if path.name == LOGS_FILE:  # a prediction's logs, kept cleaned of every control character
            found = CONTROL.search(path.read_text(encoding="utf-8"))
            assert found is None, f"{path} holds {found.group()!r}\n{explain}"
            continue
        assert path.is_dir() or path.suffix in STORED, path
    for sid, content_type in case.types.items():
        assert steps[sid]["outputs"][0]["content_type"] == content_type, explain
        assert steps[sid]["outputs"][0]["path"].endswith(
            {"application/octet-stream": ".bin"}.get(content_type, "." + content_type.split("/")[1])
        ), explain
    assert json.dumps(manifest).count("\\u001b") == 0, explain  # no escape kept in the record either
