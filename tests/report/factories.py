"""Run directories and sweep roots made on disk for the report tests, in the formats the runner writes.

``run.json`` is written by the runner's own :class:`~kkiai_pipeline.rundir.RunRecord`, so these tests
follow its format; output files are real pictures made with Pillow (PNG, JPEG, animated GIF and WebP).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw

from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.rundir import Obtained, RunRecord, RunStatus, StepRecord, StepStatus

FORMATS = {
    "image/png": (".png", "PNG"),
    "image/jpeg": (".jpg", "JPEG"),
    "image/webp": (".webp", "WEBP"),
    "image/gif": (".gif", "GIF"),
}
TIMES = ("2026-01-02T03:04:05.000000Z", "2026-01-02T03:04:05.250000Z", "2026-01-02T03:04:07.750000Z")


@dataclass
class StepSpec:
    """One step to record: its status, inputs, and outputs as content types (files are drawn)."""

    status: StepStatus = "succeeded"
    model: str = "stability-ai/sdxl"
    depends_on: list[str] = field(default_factory=list)
    input: dict[str, Any] | None = field(default_factory=lambda: {"prompt": "a mug"})
    outputs: Sequence[str] = ("image/png",)
    error: str | None = None
    animated: bool = False
    color: tuple[int, int, int] = (70, 120, 200)
    obtained: Obtained | None = "created"
    note: str | None = None


def picture(path: Path, content_type: str, *, color: tuple[int, int, int], animated: bool = False) -> None:
    """A small real picture (or animation, or fake MP4 bytes) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if content_type not in FORMATS:
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
        return
    frames = []
    for i in range(4 if animated else 1):
        frame = Image.new("RGB", (96, 64), (240, 236, 220))
        ImageDraw.Draw(frame).ellipse((10 + 15 * i, 12, 50 + 15 * i, 52), fill=color)
        frames.append(frame)
    fmt = FORMATS[content_type][1]
    extra: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": 120, "loop": 0}
    frames[0].save(path, format=fmt, **(extra if animated else {}))


def make_run(
    run_dir: Path,
    steps: Mapping[str, StepSpec],
    *,
    status: RunStatus = "succeeded",
    pipeline: str = "demo",
    write_files: bool = True,
) -> Path:
    """Record ``steps`` in ``run_dir/run.json`` and draw their output files; returns ``run_dir``."""
    records = {sid: _record(run_dir, sid, spec, write_files) for sid, spec in steps.items()}
    record = RunRecord(
        run_dir=run_dir,
        pipeline=pipeline,
        api={"kind": "sandbox", "base_url": "http://127.0.0.1:9/replicate/v1"},
        steps=records,
        source=f"/pipelines/{pipeline}.yaml",
        seed=42,
        status=status,
        started_at=TIMES[0],
        finished_at=TIMES[2],
    )
    record.save()
    return run_dir


def _record(run_dir: Path, sid: str, spec: StepSpec, write_files: bool) -> StepRecord:
    outputs = []
    if spec.status == "succeeded":
        for i, ctype in enumerate(spec.outputs):
            rel = f"steps/{sid}/output_{i}{FORMATS.get(ctype, ('.mp4',))[0]}"
            if write_files:
                picture(run_dir / rel, ctype, color=spec.color, animated=spec.animated)
            data = (run_dir / rel).read_bytes() if write_files else b""
            url = f"http://127.0.0.1:9/files/{sid}/out-{i}"
            outputs.append(Artifact(rel, url, hashlib.sha256(data).hexdigest(), len(data), ctype))
    ran = spec.status not in ("skipped", "pending")
    return StepRecord(
        model=spec.model,
        version="7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
        depends_on=list(spec.depends_on),
        status=spec.status,
        input=spec.input if ran else None,
        key=hashlib.sha256(sid.encode()).hexdigest() if ran else None,
        obtained=spec.obtained if ran else None,
        prediction_id=f"pred-{sid}" if ran else None,
        error=spec.error,
        note=spec.note,
        started=TIMES[0] if ran else None,
        ended=TIMES[2] if ran else None,
        created_at=TIMES[0] if ran else None,
        started_at=TIMES[1] if ran else None,
        completed_at=TIMES[2] if ran else None,
        metrics={"predict_time": 2.5} if ran else {},
        outputs=outputs,
        output=[o.url for o in outputs] or None,
    )


def make_sweep(
    sweep_dir: Path,
    task: Sequence[str],
    jobs: Sequence[Mapping[str, str]],
    *,
    failing: Mapping[int, StepStatus] | None = None,
    no_run: Sequence[int] = (),
) -> Path:
    """A multirun root: ``task`` as written, one job per override mapping (values as Hydra escapes them).

    Each job runs ``generate`` then ``upscale``; ``failing`` maps job numbers to the status of a failed
    ``generate`` (its ``upscale`` is skipped), and the jobs in ``no_run`` have no run.json.
    """
    failing = failing or {}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    multirun = {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": list(task)}}}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for number, overrides in enumerate(jobs):
        job = sweep_dir / str(number)
        (job / ".hydra").mkdir(parents=True)
        listed = ["pipeline=demo", *(f"{k}={v}" for k, v in overrides.items()), "cache=False"]
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(listed))
        if number in no_run:
            continue
        color = (40 * number % 256, 90, 160)
        bad = failing.get(number)
        steps = {
            "generate": StepSpec(status=bad or "succeeded", error="E1000 boom" if bad else None, color=color),
            "upscale": StepSpec(
                status="skipped" if bad else "succeeded",
                depends_on=["generate"],
                error="skipped: dependency 'generate' did not succeed" if bad else None,
                color=color,
            ),
        }
        make_run(job, steps, status="failed" if bad else "succeeded")
    return sweep_dir
