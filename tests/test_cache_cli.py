"""The managed cache: a damaged blob is never served, and ``kkiai-cache`` lists, measures, verifies
and collects the ledger and its files."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.cache_cli import main
from kkiai_pipeline.errors import DownloadError
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.ledger import LEDGER_FILE, Ledger, _start_time
from kkiai_pipeline.orchestrator import run_pipeline
from kkiai_pipeline.pipeline import parse_pipeline, read_pipeline_file
from kkiai_pipeline.rundir import RunRecord
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread
from kkiai_pipeline.settings import ApiSettings, Settings

from .integration import SCRIPTS

SHOTS = Path(__file__).resolve().parent.parent / "pipelines" / "product_shots.yaml"
DAY = 86400.0


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0.01)) as running:
        yield running


def shots(tmp_path: Path, base_url: str, name: str, seed: int = 11) -> RunRecord:
    settings = Settings(
        api=ApiSettings("kkiai", base_url, "t", ClientOptions(poll_interval=0.01, wait_seconds=5)),
        execution=ExecutionOptions(max_concurrency=4),
        progress=False,
        run_dir=tmp_path / name,
        cache_dir=tmp_path / "cache",
        seed=seed,
    )
    return run_pipeline(parse_pipeline(read_pipeline_file(SHOTS), source=SHOTS), settings)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def requests(sandbox: Any) -> dict[str, int]:
    return dict(sandbox.stats()["requests"])


def test_a_truncated_blob_is_not_served_but_fetched_again_by_id(tmp_path: Path, sandbox: Any) -> None:
    first = shots(tmp_path, sandbox.base_url, "one")
    assert first.status == "succeeded"
    generated = first.steps["generate"].outputs[0]
    blob = tmp_path / "cache" / "blobs" / generated.sha256[:2] / generated.sha256
    blob.write_bytes(blob.read_bytes()[:100])  # a disk that filled up, a copy cut short
    before = requests(sandbox)

    second = shots(tmp_path, sandbox.base_url, "two")

    assert second.status == "succeeded"
    seen = {kind: n - before[kind] for kind, n in requests(sandbox).items()}
    # nothing paid: the prediction was read again by its id and its two files downloaded again
    assert (seen["create"], seen["get"], seen["file"]) == (0, 1, 2)
    assert second.steps["generate"].obtained == "recovered"
    assert second.steps["generate"].prediction_id == first.steps["generate"].prediction_id
    assert {s.obtained for sid, s in second.steps.items() if sid != "generate"} == {"reused"}
    served = second.run_dir / second.steps["generate"].outputs[0].path
    assert sha(served) == generated.sha256  # the damaged bytes never reached the run directory
    assert sha(blob) == generated.sha256  # and the store holds the whole file again


def test_a_blob_damaged_after_the_hit_is_not_copied_out(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "cache")
    try:
        source = tmp_path / "download.png"
        source.write_bytes(b"the whole file")
        digest = sha(source)
        ledger.adopt(source, digest)
        ledger.blob(digest).write_bytes(b"the who")
        with pytest.raises(DownloadError, match=r"is damaged .* run again to fetch it by prediction id"):
            ledger.copy_out(digest, tmp_path / "run" / "output_0.png")
        assert not (tmp_path / "run" / "output_0.png").exists()
        assert not ledger.blob(digest).exists()  # removed: the next hit is a miss, fetched again by id
    finally:
        ledger.close()


def cache_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``kkiai-cache --cache-dir <tmp>/cache ARGS`` in-process: its exit code, stdout and stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ended:
        main(["--cache-dir", str(tmp_path / "cache"), *args])
    return int(ended.value.code or 0), out.getvalue(), err.getvalue()


def age(tmp_path: Path, days: float, *, keys: list[str] | None = None) -> None:
    """Make entries (all, or ``keys``) and every blob look unused for ``days``."""
    then = time.time() - days * DAY
    with sqlite3.connect(tmp_path / "cache" / LEDGER_FILE) as db:
        where = f" WHERE key IN ({','.join('?' * len(keys))})" if keys else ""
        db.execute(f"UPDATE entries SET updated = ?{where}", (then, *(keys or [])))
        db.execute(f"UPDATE uses SET at = ?{where}", (then, *(keys or [])))
    for blob in (tmp_path / "cache" / "blobs").glob("*/*"):
        os.utime(blob, (then, then))


def test_ls_du_and_verify_describe_the_cache(tmp_path: Path, sandbox: Any) -> None:
    record = shots(tmp_path, sandbox.base_url, "one")
    code, out, _ = cache_cli(tmp_path, "ls", "--json")
    entries = json.loads(out)
    assert code == 0
    assert sorted(e["prediction_id"] for e in entries) == sorted(
        s.prediction_id for s in record.steps.values()
    )
    assert {e["state"] for e in entries} == {"stored"}
    generate = next(e for e in entries if e["version"].startswith("stability-ai/sdxl:"))
    assert generate["bytes"] == sum(a.bytes for a in record.steps["generate"].outputs)
    code, table, _ = cache_cli(tmp_path, "ls")
    assert table.splitlines()[0].split() == [
        "key",
        "model",
        "state",
        "created",
        "last",
        "used",
        "size",
        "prediction",
    ]
    assert len(table.splitlines()) == 4

    code, out, _ = cache_cli(tmp_path, "du", "--json")
    usage = json.loads(out)
    on_disk = {a.sha256: a.bytes for s in record.steps.values() for a in s.outputs}
    assert (usage["files"], usage["bytes"]) == (len(on_disk), sum(on_disk.values()))
    assert usage["by_state"]["stored"]["entries"] == 3
    assert usage["by_model"]["cjwbw/rembg"]["entries"] == 1

    assert cache_cli(tmp_path, "verify")[0] == 0
    cut = record.steps["cutout"].outputs[0].sha256
    blob = tmp_path / "cache" / "blobs" / cut[:2] / cut
    blob.write_bytes(blob.read_bytes() + b"!")
    code, out, err = cache_cli(tmp_path, "verify")
    assert code == 1
    assert out.startswith(f"damaged: {blob} (")
    assert f"(prediction {record.steps['cutout'].prediction_id})" in out
    assert f"verified {len(on_disk)} files: 1 damaged, 0 missing" in err
    blob.unlink()
    code, out, _ = cache_cli(tmp_path, "verify")
    assert (code, out.split(" ")[0]) == (1, "missing:")


def test_gc_removes_what_was_not_used_and_keeps_what_may_still_be_paid_for(
    tmp_path: Path, sandbox: Any
) -> None:
    old = shots(tmp_path, sandbox.base_url, "old", seed=1)
    shots(tmp_path, sandbox.base_url, "new", seed=2)
    old_keys = [s.key for s in old.steps.values() if s.key]
    age(tmp_path, 40, keys=old_keys)
    ledger = Ledger(tmp_path / "cache")
    live = f"{socket.gethostname()}:{os.getppid()}:{_start_time(os.getppid())}"  # another process, alive
    try:  # a prediction whose create may have reached the service, and one a live process is creating
        for n, state in enumerate(("unresolved", "intended")):
            ledger._db.execute(
                "INSERT INTO entries (key, identity, version, input, state, owner, updated) VALUES (?,?,?,?,?,?,?)",
                (f"k{n}", "sandbox", "a/b:1", "{}", state, live, time.time() - 40 * DAY),
            )
    finally:
        ledger.close()
    orphan = tmp_path / "cache" / "blobs" / "ff" / ("f" * 64)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left by a crash")
    young_orphan = tmp_path / "cache" / "blobs" / "ee" / ("e" * 64)
    young_orphan.parent.mkdir(parents=True, exist_ok=True)
    young_orphan.write_bytes(b"being stored right now")
    os.utime(orphan, (time.time() - 40 * DAY,) * 2)
    old_files = {a.sha256 for s in old.steps.values() for a in s.outputs}

    code, out, _ = cache_cli(tmp_path, "gc", "--older-than", "30", "--dry-run")
    assert (code, out.splitlines()[0].split(" files")[0]) == (
        0,
        f"would remove 3 entries and {len(old_files) + 1}",
    )
    assert len(json.loads(cache_cli(tmp_path, "ls", "--json")[1])) == 8  # a dry run removes nothing

    code, out, _ = cache_cli(tmp_path, "gc", "--older-than", "30")
    assert code == 0
    assert out.splitlines()[0].startswith(f"removed 3 entries and {len(old_files) + 1} files")
    assert "kept 1 old entries that name predictions which may still run" in out
    left = {e["key"]: e["state"] for e in json.loads(cache_cli(tmp_path, "ls", "--json")[1])}
    assert not set(old_keys) & set(left)
    assert left["k0"] == "unresolved" and left["k1"] == "intended"  # owned by this (live) process
    assert not orphan.exists() and young_orphan.exists()
    assert all(not (tmp_path / "cache" / "blobs" / f[:2] / f).exists() for f in old_files)
    assert cache_cli(tmp_path, "verify")[0] == 1  # the young orphan is not a file of its name's hash

    again = shots(tmp_path, sandbox.base_url, "again", seed=2)  # the recent run is still a hit
    assert {s.obtained for s in again.steps.values()} == {"reused"}

    code, out, _ = cache_cli(tmp_path, "gc", "--older-than", "0")  # everything that can go, files and all
    recent = {a.sha256 for s in again.steps.values() for a in s.outputs}
    assert out.splitlines()[0].startswith(f"removed 3 entries and {len(recent)} files")
    assert sorted(e["key"] for e in json.loads(cache_cli(tmp_path, "ls", "--json")[1])) == ["k0", "k1"]
    assert [p.name for p in (tmp_path / "cache" / "blobs").glob("*/*")] == [young_orphan.name]


def test_kkiai_cache_is_a_console_script_that_finds_the_default_cache(tmp_path: Path) -> None:
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(SCRIPTS / "kkiai-cache"), "du"], env=environ, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (
        0,
        f"kkiai-cache: no cache in {tmp_path / 'kkiai-pipeline'} (nothing stored yet)\n",
    )
    assert not (tmp_path / "kkiai-pipeline").exists()  # looking does not create it
    code, _, err = cache_cli(tmp_path, "gc", "--older-than", "soon")
    assert code == 2 and "not a number of days: 'soon'" in err


def test_a_hit_counts_as_a_use(tmp_path: Path, sandbox: Any) -> None:
    shots(tmp_path, sandbox.base_url, "first", seed=3)
    age(tmp_path, 40)
    reused = shots(tmp_path, sandbox.base_url, "reused", seed=3)
    assert {s.obtained for s in reused.steps.values()} == {"reused"}
    code, out, _ = cache_cli(tmp_path, "gc", "--older-than", "30")
    assert (code, out.splitlines()[0]) == (0, "removed 0 entries and 0 files (0 B) unused for 30 days")
    assert len(json.loads(cache_cli(tmp_path, "ls", "--json")[1])) == 3


def test_a_blob_is_on_disk_before_its_name_and_its_name_before_the_ledger_says_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, bool]] = []  # (what was fsynced, whether the blob's name existed then)
    real_fsync = os.fsync
    ledger = Ledger(tmp_path / "cache")
    source = tmp_path / "cache" / "incoming" / "k" / "output_0.png"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"png bytes")
    digest = sha(source)

    def fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), ledger.blob(digest).exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        ledger.adopt(source, digest)
    finally:
        ledger.close()
    assert synced == [(str(source), False), (str(ledger.blob(digest).parent), True)]
    assert sha(ledger.blob(digest)) == digest and not source.exists()
