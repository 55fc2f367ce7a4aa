"""The console script ``kkiai-cache``: list, measure, check and clean the prediction cache.

The cache is the ledger (``<cache dir>/ledger.sqlite3``) and its files (``<cache dir>/blobs/``, one
file per sha256). The cache directory is found as ``kkiai-run`` finds it by default
(``$XDG_CACHE_HOME/kkiai-pipeline``, else ``~/.cache/kkiai-pipeline``) unless ``--cache-dir`` names one.

- ``ls``: one line an entry: key, model, state, created, last used, size, prediction id (``--json``).
- ``du``: the files' total size, and the entries' sizes by state and by model (``--json``).
- ``verify``: hashes every file again; lists damaged and missing ones; exit 1 if there are any.
- ``gc --older-than DAYS``: removes entries not used for DAYS (stored, expired, failed, or intended
  by a process that is gone; never one a live process owns, never one naming a prediction that may
  still be billed or resolved), their files unless another entry names them, and every other file no
  entry names unless it is younger than an hour (a running process may be storing it). ``--dry-run``
  says what it would remove.

Exit codes: 0 done; 1 ``verify`` found damage; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .artifacts import verify
from .ledger import COLLECTABLE, LEDGER_FILE, Ledger, Row
from .settings import default_cache_dir
from .terminal import columns, write_stdout

#: Files no entry names are kept this long (seconds): a running process may be about to record them.
GRACE_SECONDS = 3600.0
DAY = 86400.0


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``kkiai-cache``."""
    args = _parser().parse_args(argv)
    root: Path = args.cache_dir or default_cache_dir(os.environ)
    if not (root / LEDGER_FILE).is_file():  # nothing was ever stored there: do not create a ledger
        print(f"kkiai-cache: no cache in {root} (nothing stored yet)", file=sys.stderr)
        raise SystemExit(0)
    ledger = Ledger(root)
    try:
        code = COMMANDS[args.command](ledger, args)
    finally:
        ledger.close()
    raise SystemExit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kkiai-cache", description="List, measure, check and clean the prediction cache."
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="the cache directory (default: $XDG_CACHE_HOME/kkiai-pipeline or ~/.cache/kkiai-pipeline)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("ls", help="one line an entry: key, model, state, dates, size, prediction")
    listing.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    usage = commands.add_parser("du", help="total size, by state and by model")
    usage.add_argument("--json", action="store_true", help="JSON instead of text")
    commands.add_parser("verify", help="hash every file again; exit 1 if any is damaged or missing")
    collect = commands.add_parser("gc", help="remove entries and files not used for DAYS")
    collect.add_argument("--older-than", type=_days, required=True, metavar="DAYS", help="days unused")
    collect.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    return parser


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"days must be 0 or more, not {text}")
    return days


# -- ls ------------------------------------------------------------------------------------------


def list_entries(ledger: Ledger, args: argparse.Namespace) -> int:
    rows = [_described(row) for row in ledger.rows_now()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("key", "model", "state", "created", "last used", "size", "prediction")
    table = [header] + [
        (
            r["key"][:12],
            _short_version(r["version"]),
            r["state"],
            r["created"],
            r["last_used"],
            _size(r["bytes"]),
            r["prediction_id"] or "-",
        )
        for r in rows
    ]
    write_stdout(columns(table))
    print(f"{len(rows)} entries in {ledger.root}", file=sys.stderr)
    return 0


def _described(row: Row) -> dict[str, Any]:
    entry = row.entry
    return {
        "key": entry.key,
        "version": row.version,
        "state": entry.state,
        "created": entry.created_at or _iso(row.updated),
        "last_used": _iso(row.used),
        "bytes": sum(f.bytes for f in entry.files),
        "files": [f.sha256 for f in entry.files],
        "prediction_id": entry.prediction_id,
    }


def _short_version(version: str) -> str:
    name, _, digest = version.partition(":")
    return f"{name}:{digest[:8]}" if digest else name


# -- du ------------------------------------------------------------------------------------------


def disk_usage(ledger: Ledger, args: argparse.Namespace) -> int:
    blobs = list(_blob_files(ledger))
    rows = ledger.rows_now()
    by_state: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        size = sum(f.bytes for f in row.entry.files)
        for tally in (by_state[row.entry.state], by_model[row.version.partition(":")[0]]):
            tally[0] += 1
            tally[1] += size
    incoming = sum(p.stat().st_size for p in (ledger.root / "incoming").rglob("*") if p.is_file())
    data: dict[str, Any] = {
        "cache_dir": str(ledger.root),
        "files": len(blobs),
        "bytes": sum(p.stat().st_size for p in blobs),
        "incoming_bytes": incoming,
        "by_state": {k: {"entries": n, "bytes": b} for k, (n, b) in sorted(by_state.items())},
        "by_model": {k: {"entries": n, "bytes": b} for k, (n, b) in sorted(by_model.items())},
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{_size(data['bytes'])} in {data['files']} files under {ledger.root / 'blobs'}")
    if incoming:
        print(f"{_size(incoming)} of unfinished downloads under {ledger.root / 'incoming'}")
    for title, groups in (("by state", data["by_state"]), ("by model", data["by_model"])):
        print(f"{title} (a file several entries name counts in each):")
        for name, tally in groups.items():
            print(f"  {name:<40} {tally['entries']:>6} entries  {_size(tally['bytes']):>10}")
    return 0


# -- verify --------------------------------------------------------------------------------------


def verify_files(ledger: Ledger, args: argparse.Namespace) -> int:
    users: dict[str, list[str]] = defaultdict(list)
    for row in ledger.rows_now():
        for stored in row.entry.files:
            users[stored.sha256].append(f"{row.entry.key[:12]} (prediction {row.entry.prediction_id})")
    checked = damaged = missing = 0
    for path in _blob_files(ledger):
        checked += 1
        if not verify(path, path.name):
            damaged += 1
            names = ", ".join(users.get(path.name, [])) or "no entry"
            print(f"damaged: {path} ({path.stat().st_size} bytes; named by {names})")
    for sha256, named in users.items():
        if not ledger.blob(sha256).is_file():
            missing += 1
            print(f"missing: {ledger.blob(sha256)} (named by {', '.join(named)})")
    print(
        f"verified {checked} files: {damaged} damaged, {missing} missing"
        + (". A run that needs them fetches them again by prediction id" if damaged or missing else ""),
        file=sys.stderr,
    )
    return 1 if damaged or missing else 0


# -- gc ------------------------------------------------------------------------------------------


def collect(ledger: Ledger, args: argparse.Namespace) -> int:
    now = time.time()
    cutoff = now - args.older_than * DAY
    removed = ledger.collect_now(unused_since=cutoff, remove=not args.dry_run)
    rows = ledger.rows_now()
    gone = {e.key for e in removed}
    named = {f.sha256 for row in rows if row.entry.key not in gone for f in row.entry.files}
    freed_by = {f.sha256 for e in removed for f in e.files}  # files of the removed entries go now;
    young = min(cutoff, now - GRACE_SECONDS)  # a file no entry named may be one being stored
    files = [
        p
        for p in _blob_files(ledger)
        if p.name not in named and p.stat().st_mtime < (cutoff if p.name in freed_by else young)
    ]
    freed = sum(p.stat().st_size for p in files)
    if not args.dry_run:
        for path in files:
            path.unlink(missing_ok=True)
        _clear_incoming(ledger.root / "incoming", young)
    kept = sum(1 for row in rows if row.entry.state not in COLLECTABLE and row.used < cutoff)
    verb = "would remove" if args.dry_run else "removed"
    days = f"{args.older_than:g} days"
    print(f"{verb} {len(removed)} entries and {len(files)} files ({_size(freed)}) unused for {days}")
    if kept:
        print(
            f"kept {kept} old entries that name predictions which may still run, be billed or be "
            "fetched again (sending, unresolved, created, succeeded): a run resolves them"
        )
    return 0


def _clear_incoming(folder: Path, before: float) -> None:
    """Remove the unfinished downloads of processes that stopped (their folders, once old)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir() and child.stat().st_mtime < before:
            for path in sorted(child.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
            child.rmdir()


# -- helpers -------------------------------------------------------------------------------------


def _blob_files(ledger: Ledger) -> Iterator[Path]:
    if ledger.blobs.is_dir():
        yield from sorted(p for p in ledger.blobs.glob("*/*") if p.is_file())


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


COMMANDS: dict[str, Callable[[Ledger, argparse.Namespace], int]] = {
    "ls": list_entries,
    "du": disk_usage,
    "verify": verify_files,
    "gc": collect,
}
