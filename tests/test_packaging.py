"""The built wheel carries conf/ and pipelines/: installed in a fresh venv, it runs from an empty folder.

This builds and installs the project for real (dependencies from the package index or pip's cache), so it
is the slowest test; it is what proves that `pip install .` gives a working `kkiai-run`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("kkiai_pipeline-*.whl")
    return built


def test_the_wheel_carries_config_pipelines_and_catalog(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "kkiai_pipeline/conf/config.yaml",
        "kkiai_pipeline/conf/api/kkiai.yaml",
        "kkiai_pipeline/conf/api/sandbox.yaml",
        "kkiai_pipeline/conf/hydra/job_logging/kkiai.yaml",
        "kkiai_pipeline/pipelines/product_shots.yaml",
        "kkiai_pipeline/pipelines/assets/mug.png",
        "kkiai_pipeline/data/models.json",
        "kkiai_pipeline/sandbox/app.py",
    ):
        assert expected in names


def test_wheel_install_runs_product_shots_offline_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr
    empty = tmp_path / "somewhere" / "else"
    empty.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "PYTHON"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the default cache, kept out of the user's home
    done = subprocess.run(
        [str(venv / "bin" / "kkiai-run"), "pipeline=product_shots", "api=sandbox", "progress=false"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = (empty / "outputs" / "product_shots").iterdir()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert "site-packages/kkiai_pipeline/pipelines/product_shots.yaml" in manifest["source"]
    outputs = [o for step in manifest["steps"].values() for o in step["outputs"]]
    assert len(outputs) == 4
    assert all((run_dir / o["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for o in outputs)
    assert (run_dir / "report.html").is_file()

    sweep = subprocess.run(
        [
            str(venv / "bin" / "kkiai-run"),
            "-m",
            "pipeline=product_shots",
            "api=sandbox",
            "pipeline.params.subject=a mug,a vase",
            "pipeline.steps.generate.input.guidance_scale=5,9",
            "pipeline.steps.generate.input.width=256",
            "pipeline.steps.generate.input.height=256",
            "progress=false",
            f"hydra.sweep.dir={empty / 'sweep'}",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stderr
    jobs = json.loads((empty / "sweep" / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4
    assert (empty / "sweep" / "summary.csv").is_file()
    assert (empty / "sweep" / "grid.png").is_file()

    # The command line's own conventions, and a rerun of that first run from a third folder.
    kkiai = str(venv / "bin" / "kkiai-run")
    version = subprocess.run([kkiai, "--version"], cwd=empty, env=env, capture_output=True, text=True)
    assert (version.returncode, version.stdout.strip()) == (0, "kkiai-pipeline 0.1.0")
    helped = subprocess.run([kkiai, "--help"], cwd=empty, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "product_shots" in helped.stdout and "--rerun" in helped.stdout
    third = tmp_path / "third"
    third.mkdir()
    rerun = subprocess.run(
        [kkiai, "--rerun", str(run_dir), "progress=false", f"hydra.run.dir={third / 'again'}"],
        cwd=third,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads((third / "again" / "run.json").read_text())
    assert {s["obtained"] for s in again["steps"].values()} == {"reused"}  # nothing paid again
    assert [s["key"] for s in again["steps"].values()] == [s["key"] for s in manifest["steps"].values()]

    # kkiai-cache finds the same default cache (XDG_CACHE_HOME) and lists what the runs stored.
    listed = subprocess.run(
        [str(venv / "bin" / "kkiai-cache"), "ls", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert {e["key"] for e in json.loads(listed.stdout)} >= {s["key"] for s in manifest["steps"].values()}

    # kkiai-runs from the wheel: the run and the sweep listed, index.html written beside them.
    runs = subprocess.run(
        [str(venv / "bin" / "kkiai-runs"), "--json", "outputs", "sweep"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert runs.returncode == 0, runs.stderr
    rows = json.loads(runs.stdout)
    assert [(r["kind"], r["status"], r["created"]) for r in rows] == [
        ("run", "succeeded", 3),
        ("sweep", "succeeded", 12),
    ]
    assert (empty / "outputs" / "index.html").is_file()
