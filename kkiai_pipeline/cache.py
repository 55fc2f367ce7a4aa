"""The cache across runs: a prediction already paid for is never paid for again.

Content-addressed, on disk (default ``~/.cache/kkiai-pipeline``, or ``$XDG_CACHE_HOME``)::

    <root>/v1/entries/<key>.json      what was asked and what came back
    <root>/v1/blobs/<aa>/<sha256>     the output files, by their content

The key is the sha256 of the API's identity (the sandbox and the real API never share entries), the
version, and the canonical input: keys sorted, and every file reference (an upstream output's URL, a
``data:`` URI) replaced by the sha256 of its content, because output URLs expire after an hour.
So an unchanged step hits, and a changed step misses together with everything downstream of it (their
inputs hold its new outputs). To ask for a fresh sample of the same input, change its ``seed`` (or
``seed=`` for the run) or bypass the cache with ``cache=false`` / a step's ``cache: false``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import Artifact, extension_for
from .rundir import write_json_atomic

LAYOUT = "v1"


@dataclass(frozen=True)
class CacheEntry:
    """One cached prediction: its output shape and the files behind it, in order."""

    key: str
    version: str
    prediction_id: str | None
    output: Any
    completed_at: str | None
    files: tuple[dict[str, Any], ...]  # {sha256, bytes, content_type}
    metrics: Mapping[str, Any] = field(default_factory=dict)


def cache_key(*, api: str, version: str, canonical_input: Mapping[str, Any]) -> str:
    """The sha256 naming one (API, version, input)."""
    text = json.dumps(
        {"api": api, "version": version, "input": canonical_input},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PredictionCache:
    """Reads and writes cache entries under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root / LAYOUT

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if it and all its files are present and intact."""
        path = self._entry_path(key)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            entry = CacheEntry(**{**raw, "files": tuple(raw["files"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not all(self._blob(f["sha256"]).is_file() for f in entry.files):
            return None
        return entry

    def put(self, entry: CacheEntry, artifacts: Sequence[Artifact], run_dir: Path) -> None:
        """Store ``entry`` and copy its files in by content."""
        for artifact in artifacts:
            _copy(run_dir / artifact.path, self._blob(artifact.sha256))
        write_json_atomic(self._entry_path(entry.key), asdict(entry))

    def restore(self, entry: CacheEntry, folder: Path, run_dir: Path) -> list[Artifact]:
        """Put the entry's files into ``folder`` as ``output_<i>.<ext>``; returns them as artifacts."""
        folder.mkdir(parents=True, exist_ok=True)
        restored = []
        for i, item in enumerate(entry.files):
            target = folder / f"output_{i}{extension_for(item['content_type'])}"
            _copy(self._blob(item["sha256"]), target)
            path = target.relative_to(run_dir).as_posix()
            url = f"cache:{entry.key}/{i}"
            restored.append(Artifact(path, url, item["sha256"], item["bytes"], item["content_type"]))
        return restored

    def _entry_path(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.json"

    def _blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256


def _copy(source: Path, target: Path) -> None:
    """``target`` with ``source``'s bytes, made atomically.

    A copy, not a hard link: a user editing an output in place must not change the cache behind it.
    """
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def files_of(artifacts: Sequence[Artifact]) -> tuple[dict[str, Any], ...]:
    """The part of each artifact a cache entry keeps."""
    return tuple({"sha256": a.sha256, "bytes": a.bytes, "content_type": a.content_type} for a in artifacts)
