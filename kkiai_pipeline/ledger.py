"""The prediction ledger: every prediction the tool may pay for, by key, durable across runs and processes.

A key names one (service, model version, input): :func:`prediction_key` is the only function that
computes it, for planning, the dry run and execution alike. An entry moves through these states, and
each move is committed to SQLite (``<cache_dir>/ledger.sqlite3``, WAL, ``synchronous=FULL``) before
the side effect that follows it::

    intended ──► sending ──► created ──► succeeded ──► stored        (files in the blob store)
       ▲            │           │            └───────► expired       (the service deleted them first)
       │            │           └──────────► failed                  (failed / canceled / aborted)
       └────────────┴──► unresolved   (a create's answer was lost and its absence is not proven)

``intended``: claimed, nothing sent. ``sending``: a create may be on the wire (when and by which
clock is recorded, so a lost answer can be looked up later). The owner of an entry is the process
that claimed it; another process that needs the same key waits while that owner is alive, and takes
the entry over, in whatever state it was left, when the owner is gone.

Files of stored entries live by content under ``<cache_dir>/blobs/``; the run directory gets copies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from .artifacts import verify
from .errors import DownloadError
from .outputs import content_keys
from .rundir import _fsync_dir

EntryState = Literal[
    "intended", "sending", "created", "succeeded", "stored", "expired", "failed", "unresolved"
]
#: States in which a live owner is still working on the entry: others wait for it.
BUSY: frozenset[str] = frozenset({"intended", "sending", "created"})
LEDGER_FILE = "ledger.sqlite3"
OWNER_BEAT_SECONDS = 10.0  # how often a process says it is alive (for owners on other hosts)
OWNER_TIMEOUT_SECONDS = 60.0  # an owner on another host silent this long is taken for dead

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    version TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    prediction_id TEXT,
    sent_at REAL,
    server_offset REAL,
    request TEXT,
    output TEXT,
    files TEXT,
    metrics TEXT,
    error TEXT,
    created_at TEXT,
    completed_at TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, beat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uses (key TEXT PRIMARY KEY, at REAL NOT NULL);
"""
#: States ``kkiai-cache gc`` may remove: nothing in them can be carried on without paying or waiting.
#: (``sending``, ``unresolved``, ``created`` and ``succeeded`` name predictions that may exist and be
#: billed: forgetting them could mean paying again, so gc keeps them.)
COLLECTABLE: frozenset[str] = frozenset({"stored", "expired", "failed", "intended"})


@dataclass(frozen=True)
class PredictionKey:
    """What one paid prediction is for; ``digest`` names it everywhere (ledger, run.json, dry run)."""

    digest: str
    identity: str  # which service answers: "sandbox", "kkiai:<base url>", "cog:<server url>"
    version: str  # owner/name:<hash>
    canonical: str  # the input as JSON, file references replaced by the sha256 of their content


def prediction_key(
    *,
    identity: str,
    version: str,
    input: Mapping[str, Any],
    known: Mapping[str, str],
    nonce: str | None = None,
) -> PredictionKey:
    """The key of a prediction of ``version`` with ``input`` on the service ``identity``.

    ``known`` maps file URLs already stored to their sha256, so an input naming the same bytes by
    another (or an expired) URL gets the same key. ``nonce`` makes the key private to one place (a
    step of one run, with ``cache: false``): nothing else can share or reuse it, but a resume of that
    run finds it again.
    """
    canonical = json.dumps(
        content_keys(input, known), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    text = json.dumps(
        {"api": identity, "version": version, "input": canonical, "nonce": nonce},
        sort_keys=True,
        separators=(",", ":"),
    )
    return PredictionKey(hashlib.sha256(text.encode("utf-8")).hexdigest(), identity, version, canonical)


@dataclass(frozen=True)
class StoredFile:
    """One output file of a stored entry, by content."""

    sha256: str
    bytes: int
    content_type: str


@dataclass(frozen=True)
class Entry:
    """One row of the ledger."""

    key: str
    state: EntryState
    owner: str | None = None
    prediction_id: str | None = None
    sent_at: float | None = None  # our wall clock (epoch seconds) when a create was last sent
    server_offset: float | None = None  # the server's clock minus ours, as last measured
    request: Any = None  # the input exactly as last sent (file references and all), to look it up by
    output: Any = None
    files: tuple[StoredFile, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class Row:
    """An entry as ``kkiai-cache`` lists it: with its model and when it was last changed or reused."""

    entry: Entry
    version: str  # owner/name:<hash>
    identity: str
    updated: float  # epoch seconds of its last change
    used: float  # epoch seconds of its last change or reuse, whichever is later


@dataclass(frozen=True)
class Claim:
    """The entry for a key as a claim found it; ``mine``: this process now owns it."""

    entry: Entry | None
    mine: bool


def this_owner() -> str:
    """This process, as ``host:pid:start``: the start time tells a reused pid from the original."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _alive_here(owner: str) -> bool | None:
    """Whether the owner, if it is a process of this host, still runs; None for other hosts."""
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return None
    pid_text, _, start = rest.partition(":")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return start == "?" or _start_time(pid) in (start, "?")


class Ledger:
    """The ledger under ``root`` (the cache directory); one per process, used from one event loop.

    SQLite calls run on one worker thread, so a commit's fsync never stalls the event loop.
    """

    def __init__(self, root: Path, *, owner: str | None = None) -> None:
        self.root = root
        self.owner = owner or this_owner()
        self.blobs = root / "blobs"
        root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kkiai-ledger")
        self._lock = threading.Lock()  # guards the moves waiting for the next commit (see move)
        self._pending: list[tuple[str, EntryState, dict[str, Any]]] = []
        self._batch: asyncio.Future[None] | None = None
        self._db = self._pool.submit(self._connect).result()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.root / LEDGER_FILE, timeout=60, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        self._pool.submit(self._db.close).result()
        self._pool.shutdown()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry for ``key``, or None."""
        result: Entry | None = await self._run(self._get, key)
        return result

    def get_now(self, key: str) -> Entry | None:
        """:meth:`get` for code outside the event loop (the dry run)."""
        result: Entry | None = self._pool.submit(self._get, key).result()
        return result

    def _get(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT * FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        names = [d[0] for d in self._db.execute("SELECT * FROM entries LIMIT 0").description]
        return _entry(dict(zip(names, row, strict=True)))

    def intact(self, entry: Entry) -> bool:
        """Whether every file of a stored entry is in the blob store with its sha256."""
        return entry.state == "stored" and all(verify(self.blob(f.sha256), f.sha256) for f in entry.files)

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    # -- claiming and moving -------------------------------------------------------------------

    async def claim(self, key: PredictionKey) -> Claim:
        """Take ``key`` for this process unless a live owner is working on it.

        A new key is inserted ``intended``. An existing entry keeps its state (the caller carries on
        from it): it becomes ours unless it is busy under another live owner, or stored (which needs
        no owner to be reused).
        """
        claim: Claim = await self._run(self._claim, key)
        return claim

    def _claim(self, key: PredictionKey) -> Claim:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            entry = self._get(key.digest)
            if entry is None:
                db.execute(
                    "INSERT INTO entries (key, identity, version, input, state, owner, updated)"
                    " VALUES (?, ?, ?, ?, 'intended', ?, ?)",
                    (key.digest, key.identity, key.version, key.canonical, self.owner, time.time()),
                )
                claim = Claim(Entry(key.digest, "intended", self.owner), mine=True)
            elif entry.state == "stored" and self.intact(entry):  # a hit: remembered for gc
                db.execute("INSERT OR REPLACE INTO uses (key, at) VALUES (?, ?)", (key.digest, time.time()))
                claim = Claim(entry, mine=False)
            elif entry.owner not in (None, self.owner) and entry.state in BUSY and self._alive(entry.owner):
                claim = Claim(entry, mine=False)
            else:
                db.execute("UPDATE entries SET owner = ? WHERE key = ?", (self.owner, key.digest))
                claim = Claim(Entry(**{**entry.__dict__, "owner": self.owner}), mine=True)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return claim

    def _busy_elsewhere(self, owner: str | None) -> bool:
        return owner is not None and owner != self.owner and self._alive(owner)

    def _alive(self, owner: str) -> bool:
        here = _alive_here(owner)
        if here is not None:
            return here
        row = self._db.execute("SELECT beat FROM owners WHERE owner = ?", (owner,)).fetchone()
        return row is not None and time.time() - row[0] < OWNER_TIMEOUT_SECONDS

    async def move(self, key: str, state: EntryState, **values: Any) -> None:
        """Set ``key``'s state (and any of its columns), durably, before the caller goes on.

        Group commit: moves made while the worker thread is busy wait for the next transaction
        together, and each returns once that transaction (and its fsync) is done. So every move is
        on disk before its caller's side effect, and a batch of 10,000 items pays one fsync for many
        moves instead of one each.
        """
        with self._lock:
            self._pending.append((key, state, values))
            batch = self._batch
            if batch is None:
                batch = self._batch = asyncio.get_running_loop().run_in_executor(self._pool, self._commit)
        await asyncio.shield(batch)

    def _commit(self) -> None:
        """On the worker thread: the moves pending now, in the order they were made, in one transaction."""
        with self._lock:
            moves, self._pending, self._batch = self._pending, [], None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for key, state, values in moves:
                self._move(key, state, values)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _move(self, key: str, state: EntryState, values: dict[str, Any]) -> None:
        columns = {"state": state, "updated": time.time(), **_columns(values)}
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self._db.execute(f"UPDATE entries SET {assignments} WHERE key = ?", (*columns.values(), key))

    async def release_busy(self) -> None:
        """Give up this process's busy entries (predictions left running): whoever needs them next
        takes them over at once, instead of waiting for this process to end."""
        await self._run(self._release_busy)

    def _release_busy(self) -> None:
        self._db.execute(
            "UPDATE entries SET owner = NULL WHERE owner = ? AND state IN ('intended', 'sending', 'created')",
            (self.owner,),
        )

    async def beat(self) -> None:
        """Say this process is alive (owners on other hosts are judged by this)."""
        await self._run(
            self._db.execute,
            "INSERT OR REPLACE INTO owners (owner, beat) VALUES (?, ?)",
            (self.owner, time.time()),
        )

    # -- files ---------------------------------------------------------------------------------

    def adopt(self, source: Path, sha256: str) -> None:
        """Move a downloaded file into the blob store (kept if an intact copy is already there).

        Crash-safe: the file's bytes are on disk (fsync) before its name is, and the name (the
        directory's fsync) before the caller records the entry ``stored``. A blob is never written in
        place: a crash leaves the old blob or the new one, never a part.
        """
        target = self.blob(sha256)
        if target.exists() and verify(target, sha256):
            source.unlink(missing_ok=True)
            os.utime(target)  # in use again: gc's grace for young blobs counts from now
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)
        _fsync_dir(target.parent)

    def copy_out(self, sha256: str, target: Path) -> None:
        """``target`` with a blob's bytes, written atomically, checked against ``sha256`` as they are
        copied: a blob damaged since the hit was judged is removed and raises DownloadError (a rerun
        then fetches the files again by prediction id), and nothing is written to ``target``.

        A copy, not a link: a user editing an output in place must not change the ledger behind it.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with self.blob(sha256).open("rb") as source, tmp.open("wb") as out:
                while chunk := source.read(1 << 16):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                self.blob(sha256).unlink(missing_ok=True)
                raise DownloadError(
                    f"the cached file {sha256[:12]} is damaged (its content no longer matches its sha256); "
                    "it was removed: run again to fetch it by prediction id",
                    url=str(self.blob(sha256)),
                )
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            raise DownloadError(
                f"the cached file {sha256[:12]} is gone from {self.blobs}: "
                "run again to fetch it by prediction id",
                url=str(self.blob(sha256)),
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)

    # -- managing the cache (kkiai-cache) --------------------------------------------------------

    def rows_now(self) -> list[Row]:
        """Every entry with its model version and when it was last changed or reused (oldest first)."""
        rows: list[Row] = self._pool.submit(self._rows).result()
        return rows

    def _rows(self) -> list[Row]:
        cursor = self._db.execute(
            "SELECT e.*, u.at AS used_at FROM entries e LEFT JOIN uses u ON u.key = e.key ORDER BY e.updated"
        )
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            used = max(row["updated"], row["used_at"] or 0.0)
            rows.append(Row(_entry(row), row["version"], row["identity"], row["updated"], used))
        return rows

    def collect_now(self, *, unused_since: float, remove: bool = True) -> list[Entry]:
        """Remove the entries in a :data:`COLLECTABLE` state not used since ``unused_since`` (epoch
        seconds) and not owned by a live process; returns them (``remove=False``: only finds them).
        Their blobs are the caller's to remove."""
        removed: list[Entry] = self._pool.submit(self._collect, unused_since, remove).result()
        return removed

    def _collect(self, unused_since: float, remove: bool) -> list[Entry]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # no claim (which marks a hit as used) runs in between
        try:
            removed = [
                row.entry
                for row in self._rows()
                if row.entry.state in COLLECTABLE
                and row.used < unused_since
                and not self._busy_elsewhere(row.entry.owner)
            ]
            for entry in removed if remove else ():
                db.execute("DELETE FROM entries WHERE key = ?", (entry.key,))
                db.execute("DELETE FROM uses WHERE key = ?", (entry.key,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return removed


def _columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values as the table stores them (JSON for structured ones)."""
    stored: dict[str, Any] = {}
    for name, value in values.items():
        if name == "files":
            value = json.dumps([f.__dict__ for f in value])
        elif name in ("output", "metrics", "request"):
            value = json.dumps(value, default=str)
        stored[name] = value
    return stored


def _entry(row: Mapping[str, Any]) -> Entry:
    files = tuple(StoredFile(**f) for f in json.loads(row["files"] or "[]"))
    return Entry(
        key=row["key"],
        state=row["state"],
        owner=row["owner"],
        prediction_id=row["prediction_id"],
        sent_at=row["sent_at"],
        server_offset=row["server_offset"],
        request=json.loads(row["request"]) if row["request"] else None,
        output=json.loads(row["output"]) if row["output"] else None,
        files=files,
        metrics=json.loads(row["metrics"]) if row["metrics"] else {},
        error=row["error"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )
