"""A tolerant reading of ``run.json`` for the reports: whatever is there, never an exception.

The runner writes run.json (:mod:`kkiai_pipeline.rundir`), but a report is also made for runs that
crashed, for jobs of a sweep that never started, and for files written by older or newer versions.
So every field is optional here: a missing or mistyped value becomes ``None``, an empty tuple or an
empty mapping, and a file that cannot be read at all gives a :class:`RunView` whose ``problem`` says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

MediaKind = Literal["image", "video", "other"]

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "image/bmp")
_VIDEO_TYPES = ("video/mp4", "video/webm", "video/ogg", "video/quicktime")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif", ".bmp")
_VIDEO_SUFFIXES = (".mp4", ".webm", ".ogv", ".mov", ".m4v")


@dataclass(frozen=True)
class OutputView:
    """One stored output file; ``path`` is as recorded (relative to the run directory)."""

    path: str
    content_type: str
    url: str = ""
    size: int | None = None

    @property
    def kind(self) -> MediaKind:
        """Whether a browser shows it as an image, plays it as a video, or neither."""
        return media_kind(self.content_type, self.path)


@dataclass(frozen=True)
class StepView:
    """What run.json says about one step."""

    id: str
    model: str = ""
    version: str = ""
    depends_on: tuple[str, ...] = ()
    status: str = "pending"
    input: Mapping[str, Any] | None = None
    prediction_id: str | None = None
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[OutputView, ...] = ()
    output: Any = None
    attempts: tuple[Mapping[str, Any], ...] = ()
    cache: str | None = None


@dataclass(frozen=True)
class RunView:
    """The whole run; ``problem`` is set when run.json is missing or unreadable."""

    run_dir: Path
    pipeline: str = ""
    source: str | None = None
    seed: Any = None
    status: str = "unknown"
    started_at: str | None = None
    finished_at: str | None = None
    api: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, StepView] = field(default_factory=dict)
    problem: str | None = None


def media_kind(content_type: str, path: str) -> MediaKind:
    """Classify an output by its content type, falling back on the file name's suffix."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in _IMAGE_TYPES:
        return "image"
    if ctype in _VIDEO_TYPES:
        return "video"
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return "image"
    if suffix in _VIDEO_SUFFIXES:
        return "video"
    return "other"


def read_run(run_dir: Path) -> RunView:
    """The run recorded in ``run_dir/run.json``; never raises."""
    try:
        raw = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RunView(run_dir=run_dir, problem="no run.json (the run did not start)")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return RunView(run_dir=run_dir, problem=f"run.json could not be read: {exc}")
    if not isinstance(raw, Mapping):
        return RunView(run_dir=run_dir, problem="run.json does not hold an object")
    steps = _mapping(raw.get("steps"))
    return RunView(
        run_dir=run_dir,
        pipeline=_text(raw.get("pipeline")) or "",
        source=_text(raw.get("source")),
        seed=raw.get("seed"),
        status=_text(raw.get("status")) or "unknown",
        started_at=_text(raw.get("started_at")),
        finished_at=_text(raw.get("finished_at")),
        api=_mapping(raw.get("api")),
        steps={str(sid): _step(str(sid), _mapping(step)) for sid, step in steps.items()},
    )


def _step(sid: str, raw: Mapping[str, Any]) -> StepView:
    deps = raw.get("depends_on")
    attempts = raw.get("attempts")
    inputs = raw.get("input")
    return StepView(
        id=sid,
        model=_text(raw.get("model")) or "",
        version=_text(raw.get("version")) or "",
        depends_on=tuple(str(d) for d in deps) if isinstance(deps, list) else (),
        status=_text(raw.get("status")) or "pending",
        input=inputs if isinstance(inputs, Mapping) else None,
        prediction_id=_text(raw.get("prediction_id")),
        error=_text(raw.get("error")),
        created_at=_text(raw.get("created_at")),
        started_at=_text(raw.get("started_at")),
        completed_at=_text(raw.get("completed_at")),
        metrics=_mapping(raw.get("metrics")),
        outputs=_outputs(raw.get("outputs")),
        output=raw.get("output"),
        attempts=tuple(a for a in attempts if isinstance(a, Mapping)) if isinstance(attempts, list) else (),
        cache=_text(raw.get("cache")),
    )


def _outputs(raw: Any) -> tuple[OutputView, ...]:
    if not isinstance(raw, list):
        return ()
    found = []
    for item in raw:
        if isinstance(item, Mapping) and isinstance(item.get("path"), str) and item["path"]:
            size = item.get("bytes")
            found.append(
                OutputView(
                    path=item["path"],
                    content_type=_text(item.get("content_type")) or "",
                    url=_text(item.get("url")) or "",
                    size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                )
            )
    return tuple(found)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
