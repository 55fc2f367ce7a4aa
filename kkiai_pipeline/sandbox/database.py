"""The persistent store: predictions and their output files in one SQLite file, ``sandbox.sqlite3``.

The file lives in the directory ``SandboxConfig.store`` names, so a later sandbox process (a resumed
run, a second terminal) serves the predictions and files of earlier ones. Output files are blobs in
the same file, written in the same transaction as the outcome they belong to: a file is never there
without its prediction knowing, nor the other way round.

Several processes may use one store at once. SQLite's write-ahead log lets readers go on while one
writer commits; every write is one statement or one ``BEGIN IMMEDIATE`` transaction, and writers that
find the file locked wait (``busy_timeout``) rather than fail. ``synchronous=NORMAL`` commits without
an fsync each time: a power cut may lose the last moments of an emulator's work, never corrupt it.

Each thread gets its own connection (SQLite connections are not shared between threads). The
``owners`` table lists the live sandbox processes, so that another one can tell a prediction whose
files are still being drawn from one whose process died (see ``Store``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..catalog import ModelSpec
from .generic import stored_version
from .models import OutputFile
from .records import FileRef, Outcome, Prediction

FILENAME = "sandbox.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another to commit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL,
    input TEXT NOT NULL,
    seed INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL NOT NULL,
    due_at REAL NOT NULL,
    owner TEXT NOT NULL,
    planned_error TEXT,
    fails_starting INTEGER NOT NULL DEFAULT 0,
    deadline REAL,
    canceled_at REAL,
    aborted INTEGER NOT NULL DEFAULT 0,
    finished_at REAL,
    render_error TEXT,
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS predictions_newest ON predictions (created_at, seq);
CREATE TABLE IF NOT EXISTS files (
    prediction_id TEXT NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (prediction_id, name)
);
CREATE TABLE IF NOT EXISTS owners (
    token TEXT PRIMARY KEY,
    pid INTEGER NOT NULL
);
"""
_COLUMNS = (
    "seq, id, version, input, seed, steps, created_at, started_at, due_at, owner, planned_error,"
    " fails_starting, deadline, canceled_at, aborted, finished_at, render_error, outputs"
)

ModelLookup = Callable[[str], ModelSpec | None]
#: A position in the list, newest first: the (created_at, seq) of the last prediction shown.
Cursor = tuple[float, int]


class StoreError(RuntimeError):
    """The store cannot be opened: not a directory, not writable, or made by a newer sandbox."""


class Database:
    """One sandbox store directory; the connections of this process to its SQLite file."""

    def __init__(self, directory: str | os.PathLike[str], *, models: ModelLookup) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self._models = models
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.connection() as db:
                self._migrate(db)
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise StoreError(f"cannot open the sandbox store {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection; once the database is closed, a connection of its own for this use."""
        if self._closed:
            with contextlib.closing(self._connect()) as once:
                yield once
            return
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._lock:
                self._open.append(db)
        yield db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from the start, so it never has to upgrade."""
        with self.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Closes every connection; later calls each open and close one of their own."""
        with self._lock:
            self._closed = True
            connections, self._open = self._open, []
        for db in connections:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the sandbox store {self.path} was made by a newer kkiai-pipeline (schema {version})"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- owners: the live sandbox processes ------------------------------------------------------

    def register(self, token: str) -> None:
        """Records this process as live under ``token``, forgetting owners whose process is gone."""
        with self.transaction() as db:
            for owner, pid in db.execute("SELECT token, pid FROM owners").fetchall():
                if not _process_alive(pid):
                    db.execute("DELETE FROM owners WHERE token = ?", (owner,))
            db.execute("INSERT OR REPLACE INTO owners (token, pid) VALUES (?, ?)", (token, os.getpid()))

    def unregister(self, token: str) -> None:
        """Records that the owner ``token`` stopped."""
        with self.connection() as db:
            db.execute("DELETE FROM owners WHERE token = ?", (token,))

    def owner_alive(self, token: str) -> bool:
        """Whether the sandbox ``token`` is still running (registered and its process alive)."""
        with self.connection() as db:
            row = db.execute("SELECT pid FROM owners WHERE token = ?", (token,)).fetchone()
        return row is not None and (row[0] == os.getpid() or _process_alive(row[0]))

    # -- predictions -----------------------------------------------------------------------------

    def insert(self, p: Prediction) -> None:
        """Records a new prediction."""
        values = (
            p.id,
            stored_version(p.model),
            json.dumps(p.input, separators=(",", ":")),
            p.seed,
            p.steps,
            p.created,
            p.started,
            p.due,
            p.owner,
            p.planned_error,
            int(p.fails_starting),
            p.deadline,
        )
        with self.connection() as db:
            db.execute(
                "INSERT INTO predictions (id, version, input, seed, steps, created_at, started_at,"
                " due_at, owner, planned_error, fails_starting, deadline)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def load(self, prediction_id: str) -> Prediction | None:
        """The prediction with this id, or None (also when its model left the catalog)."""
        with self.connection() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        return None if row is None else self._record(row)

    def load_many(self, ids: Sequence[str]) -> list[Prediction]:
        """The predictions with these ids that exist, in no particular order."""
        found: list[Prediction] = []
        with self.connection() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT {_COLUMNS} FROM predictions WHERE id IN ({marks})", chunk)
                found.extend(p for row in rows if (p := self._record(row)) is not None)
        return found

    def page(
        self,
        *,
        limit: int,
        after: Cursor | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> tuple[list[Prediction], Cursor | None]:
        """Up to ``limit`` predictions newest first, older than ``after``; and the cursor of the next page."""
        clauses: list[str] = ["1"]
        params: list[float] = []
        if after is not None:
            clauses.append("(created_at, seq) < (?, ?)")
            params.extend(after)
        if created_after is not None:
            clauses.append("created_at >= ?")
            params.append(created_after)
        if created_before is not None:
            clauses.append("created_at < ?")
            params.append(created_before)
        query = (
            f"SELECT {_COLUMNS} FROM predictions WHERE {' AND '.join(clauses)}"
            " ORDER BY created_at DESC, seq DESC LIMIT ?"
        )
        with self.connection() as db:
            rows = db.execute(query, (*params, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        predictions = [p for row in rows if (p := self._record(row)) is not None]
        return predictions, ((rows[-1][6], rows[-1][0]) if more else None)

    def stop(self, prediction_id: str, *, at: float, aborted: bool) -> bool:
        """Records a cancel (or a missed deadline) unless one was recorded first; True if this one was."""
        with self.connection() as db:
            cursor = db.execute(
                "UPDATE predictions SET canceled_at = ?, aborted = ? WHERE id = ? AND canceled_at IS NULL",
                (at, int(aborted), prediction_id),
            )
        return cursor.rowcount == 1

    def stopped(self, prediction_id: str) -> bool:
        """Whether a cancel or a missed deadline was recorded for the prediction."""
        with self.connection() as db:
            row = db.execute("SELECT canceled_at FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        return row is not None and row[0] is not None

    def finish(
        self,
        prediction_id: str,
        *,
        files: Sequence[OutputFile],
        error: str | None,
        clock: Callable[[], float],
    ) -> bool:
        """Records the outcome of drawing the files, with the files, unless another process did first.

        The outcome is stamped with ``clock()`` once the write lock is held, so that nobody can have
        seen the prediction unfinished after the moment it says it finished.
        """
        outputs = json.dumps([[f.name, f.media_type] for f in files])
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE predictions SET finished_at = ?, render_error = ?, outputs = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (clock(), error, outputs, prediction_id),
            )
            if cursor.rowcount != 1:
                return False
            db.executemany(
                "INSERT OR REPLACE INTO files (prediction_id, name, media_type, content) VALUES (?, ?, ?, ?)",
                [(prediction_id, f.name, f.media_type, f.content) for f in files],
            )
        return True

    def content(self, prediction_id: str, name: str) -> bytes | None:
        """The bytes of an output file, or None once removed."""
        with self.connection() as db:
            row = db.execute(
                "SELECT content FROM files WHERE prediction_id = ? AND name = ?", (prediction_id, name)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def purge(self, *, completed_by: float) -> int:
        """Removes the files of predictions completed by that moment, and of canceled ones.

        Returns how many files went. A succeeded prediction completed when both its predict time was
        over and its files were drawn.
        """
        with self.connection() as db:
            cursor = db.execute(
                "DELETE FROM files WHERE prediction_id IN (SELECT f.prediction_id FROM files f"
                " JOIN predictions p ON p.id = f.prediction_id"
                " WHERE p.canceled_at IS NOT NULL OR max(p.due_at, p.finished_at) <= ?)",
                (completed_by,),
            )
        return cursor.rowcount

    def _record(self, row: tuple[Any, ...]) -> Prediction | None:
        (_, pid, version, input, seed, steps, created, started, due, owner, planned, fails) = row[:12]
        (deadline, canceled_at, aborted, finished, render_error, outputs) = row[12:]
        model = self._models(version)
        if model is None:
            return None
        outcome = None
        if finished is not None:
            files = tuple(FileRef(name, media_type) for name, media_type in json.loads(outputs or "[]"))
            outcome = Outcome(finished=finished, error=render_error, files=files)
        return Prediction(
            id=pid,
            model=model,
            input=json.loads(input),
            seed=seed,
            steps=steps,
            created=created,
            started=started,
            due=due,
            owner=owner,
            planned_error=planned,
            fails_starting=bool(fails),
            deadline=deadline,
            canceled_at=canceled_at,
            aborted=bool(aborted),
            outcome=outcome,
        )


def encode_cursor(cursor: Cursor) -> str:
    """An opaque ``cursor`` query value, as the API's are."""
    return base64.urlsafe_b64encode(f"{cursor[0]!r}/{cursor[1]}".encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> Cursor | None:
    """The position ``encode_cursor`` made, or None for a missing or unreadable cursor (the first page)."""
    if not text:
        return None
    try:
        created, _, seq = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().partition("/")
        return float(created), int(seq)
    except ValueError:
        return None


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # signal 0 would terminate it there; a stale owner only delays drawing orphans
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
