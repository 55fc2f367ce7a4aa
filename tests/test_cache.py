from __future__ import annotations

import hashlib
from pathlib import Path

from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.cache import CacheEntry, PredictionCache, cache_key, files_of


def stored(run_dir: Path, name: str, data: bytes) -> Artifact:
    (run_dir / "steps" / "a").mkdir(parents=True, exist_ok=True)
    (run_dir / "steps" / "a" / name).write_bytes(data)
    return Artifact(
        f"steps/a/{name}", f"https://x/{name}", hashlib.sha256(data).hexdigest(), len(data), "image/png"
    )


def test_keys_depend_on_api_version_and_input_but_not_key_order() -> None:
    base = cache_key(api="sandbox", version="o/n:1", canonical_input={"a": 1, "b": 2})
    assert base == cache_key(api="sandbox", version="o/n:1", canonical_input={"b": 2, "a": 1})
    assert base != cache_key(api="kkiai:https://x", version="o/n:1", canonical_input={"a": 1, "b": 2})
    assert base != cache_key(api="sandbox", version="o/n:2", canonical_input={"a": 1, "b": 2})
    assert base != cache_key(api="sandbox", version="o/n:1", canonical_input={"a": 1, "b": 3})


def test_put_get_restore_roundtrip(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path / "cache")
    first = tmp_path / "run1"
    artifacts = [stored(first, "output_0.png", b"zero"), stored(first, "output_1.png", b"one")]
    entry = CacheEntry(
        "k" * 64, "o/n:1", "pid", ["https://x/0", "https://x/1"], "2026-01-01T00:00:00Z", files_of(artifacts)
    )
    assert cache.get(entry.key) is None
    cache.put(entry, artifacts, first)
    found = cache.get(entry.key)
    assert found == entry

    second = tmp_path / "run2"
    restored = cache.restore(found, second / "steps" / "b", second)
    assert [a.path for a in restored] == ["steps/b/output_0.png", "steps/b/output_1.png"]
    assert [(second / a.path).read_bytes() for a in restored] == [b"zero", b"one"]
    assert [a.sha256 for a in restored] == [a.sha256 for a in artifacts]
    # the cache holds copies: editing a run's file does not change the cache
    (first / artifacts[0].path).write_bytes(b"edited")
    assert (second / restored[0].path).read_bytes() == b"zero"


def test_an_entry_whose_files_are_gone_is_a_miss(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path / "cache")
    artifacts = [stored(tmp_path, "output_0.png", b"zero")]
    entry = CacheEntry("e" * 64, "o/n:1", None, "https://x/0", None, files_of(artifacts))
    cache.put(entry, artifacts, tmp_path)
    for blob in (tmp_path / "cache").rglob("*"):
        if blob.is_file() and blob.parent.name != "entries":
            blob.unlink()
    assert cache.get(entry.key) is None


def test_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path)
    (tmp_path / "v1" / "entries").mkdir(parents=True)
    (tmp_path / "v1" / "entries" / ("c" * 64 + ".json")).write_text("{not json")
    assert cache.get("c" * 64) is None
