"""Dry runs send nothing; seeds make request bodies byte-identical run after run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.orchestrator import run_pipeline
from kkiai_pipeline.pipeline import parse_pipeline, read_pipeline_file
from kkiai_pipeline.planning import derive_seed
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread
from kkiai_pipeline.settings import ApiSettings, Settings

from .integration import kkiai_run

SHIPPED = Path(__file__).resolve().parent.parent / "pipelines"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0.01)) as running:
        yield running


def test_dry_run_prints_and_writes_the_plan_without_a_token_or_a_request(
    tmp_path: Path, sandbox: Any
) -> None:
    before = sandbox.stats()["requests"]
    result = kkiai_run(
        "pipeline=product_shots",
        "dry_run=true",
        "seed=7",
        f"api.base_url={sandbox.base_url}",
        cwd=tmp_path,
        token=None,
    )
    assert result.code == 0, result.stderr
    assert sandbox.stats()["requests"] == before
    assert "3 steps: would create 3 predictions, 0 reused." in result.stdout
    assert "[level 1] cleanup: sujaykhandekar/object-removal@153b0087c257  (after generate)" in result.stdout
    assert (
        '    image_path: "{{ steps.generate.output[1] }}"  (template, rendered at run time)' in result.stdout
    )
    assert f"    seed: {derive_seed(7, 'generate')}" in result.stdout
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert [(s["id"], s["level"], s["depends_on"]) for s in plan["steps"]] == [
        ("generate", 0, []),
        ("cleanup", 1, ["generate"]),
        ("cutout", 2, ["cleanup"]),
    ]
    assert plan["predictions"] == 3
    assert plan["steps"][2]["input"] == {"image": "{{ steps.cleanup.output }}"}
    mermaid = (result.run_dir / "plan.mmd").read_text()
    assert mermaid.splitlines()[0] == "flowchart LR"
    assert "    s0 --> s1" in mermaid
    assert not (result.run_dir / "run.json").exists()


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(42, "generate") == derive_seed(42, "generate")
    assert len({derive_seed(42, s) for s in ("a", "b", "c")} | {derive_seed(43, "a")}) == 4
    assert 0 <= derive_seed(42, "generate") < 2**31


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to the network, keeping the body of every create."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.creates: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/predictions"):
            self.creates.append(await request.aread())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def run_recorded(sandbox: Any, run_dir: Path, seed: int) -> list[bytes]:
    source = SHIPPED / "product_shots.yaml"
    pipeline = parse_pipeline(read_pipeline_file(source), source=source)
    settings = Settings(
        api=ApiSettings("kkiai", sandbox.base_url, "t", ClientOptions(poll_interval=0.01, wait_seconds=5)),
        execution=ExecutionOptions(max_concurrency=4),
        progress=False,
        run_dir=run_dir,
        seed=seed,
    )
    recorder = Recorder()
    record = run_pipeline(pipeline, settings, catalog=default_catalog(), transport=recorder)
    assert not isinstance(record, str)
    assert record.status == "succeeded"
    assert record.seed == seed
    # Upstream outputs reach later steps as URLs that name their prediction, which differs on every run;
    # what must not differ is the content behind them, so URLs are replaced by the sha256 of that content.
    by_url = {a.url: a.sha256 for step in record.steps.values() for a in step.outputs}
    bodies = []
    for body in recorder.creates:
        for url, digest in by_url.items():
            body = body.replace(url.encode(), f"sha256:{digest}".encode())
        bodies.append(body)
    return sorted(bodies)


def test_the_same_config_and_seed_send_byte_identical_bodies(tmp_path: Path, sandbox: Any) -> None:
    first = run_recorded(sandbox, tmp_path / "one", seed=42)
    second = run_recorded(sandbox, tmp_path / "two", seed=42)
    other = run_recorded(sandbox, tmp_path / "three", seed=43)
    assert len(first) == 3
    assert first == second
    assert sum(b"sha256:" in body for body in first) == 2  # cleanup and cutout read upstream outputs
    assert first != other
    generate = next(json.loads(b) for b in first if b"sdxl" in b)
    assert generate["input"]["seed"] == derive_seed(42, "generate")
    # rembg and object-removal take no seed, so none is added to them
    assert all("seed" not in json.loads(b)["input"] for b in first if b"sdxl" not in b)


def test_local_file_pipeline_runs_on_the_sandbox(tmp_path: Path, sandbox: Any) -> None:
    result = kkiai_run("pipeline=local_photo", f"api.base_url={sandbox.base_url}", cwd=tmp_path)
    assert result.code == 0, result.stderr
    sent = result.manifest["steps"]["restyle"]["input"]["image"]
    assert sent.startswith("data:image/png;base64,")
    assert result.manifest["steps"]["cutout"]["status"] == "succeeded"
