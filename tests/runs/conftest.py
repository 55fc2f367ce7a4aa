"""A folder of real runs and a sweep, made once for the session by the sandbox in-process (Python API),
plus the damaged run directories a listing must survive."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kkiai_pipeline

FAST = [
    "api=sandbox",
    "api.sandbox.queue_seconds=0.01",
    "api.sandbox.predict_seconds=0.01",
    "api.poll_interval=0.02",
    "pipeline.steps.generate.input.width=256",
    "pipeline.steps.generate.input.height=256",
]


# Run B is priced (0.01 + 0.02 + 0.005 for its three predictions); the others are not.
PRICES = (
    "prices={stability-ai/sdxl:{per_prediction:0.01},sujaykhandekar/object-removal:{per_prediction:0.02},"
    "cjwbw/rembg:{per_prediction:0.005}}"
)


@dataclass(frozen=True)
class Home:
    """The working folder: ``outputs/`` and ``multirun/`` as kkiai-run leaves them."""

    root: Path
    a: Path  # product_shots as shipped
    b: Path  # another surface and seed, priced
    c: Path  # A again: every prediction reused
    failed: Path  # the sandbox fails its first step
    sweep: Path  # seed=1,2
    garbage: Path  # run.json is not JSON
    v1: Path  # an old run.json without schema_version
    crashed: Path  # run.json says running, a journal holds later changes

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"


def _run(root: Path, name: str, *more: str) -> Path:
    overrides = [
        *FAST,
        f"cache_dir={root / 'cache'}",
        f"hydra.run.dir={root / 'outputs/product_shots' / name}",
    ]
    return kkiai_pipeline.run("product_shots", overrides=[*overrides, *more]).run_dir


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("home")
    a = _run(root, "a")
    b = _run(root, "b", "pipeline.params.surface=oak", "seed=7", PRICES)
    c = _run(root, "c")
    failed = _run(root, "f", "pipeline.params.subject='a vase [sandbox:fail]'")
    swept = kkiai_pipeline.run_sweep(
        "product_shots",
        overrides=[
            *FAST,
            f"cache_dir={root / 'cache'}",
            f"hydra.sweep.dir={root / 'multirun/s'}",
            "seed=1,2",
        ],
    )
    junk = root / "outputs" / "junk"
    garbage = junk / "garbage"
    garbage.mkdir(parents=True)
    (garbage / "run.json").write_text("{not json", encoding="utf-8")
    v1 = junk / "v1"
    v1.mkdir()
    step = {
        "model": "stability-ai/sdxl",
        "version": "v",
        "status": "succeeded",
        "cache": "hit",
        "outputs": [],
    }
    old = {
        "pipeline": "old_one",
        "status": "succeeded",
        "started_at": "2025-01-01T00:00:00Z",
        "steps": {"s": step},
    }
    (v1 / "run.json").write_text(json.dumps(old), encoding="utf-8")
    crashed = junk / "crashed"
    shutil.copytree(a, crashed)
    record = json.loads((crashed / "run.json").read_text(encoding="utf-8"))
    record.update(status="running", finished_at=None)
    later = {**record["steps"]["cutout"], "status": "failed", "error": "E1 crashed", "outputs": []}
    record["steps"]["cutout"].update(status="running", obtained=None)
    (crashed / "run.json").write_text(json.dumps(record), encoding="utf-8")
    (crashed / "run.journal").write_text(
        json.dumps({"step": "cutout", "record": later}) + "\n{torn", encoding="utf-8"
    )
    yield Home(root, a, b, c, failed, swept.sweep_dir, garbage, v1, crashed)
