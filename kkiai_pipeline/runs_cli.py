"""``kkiai-runs``: the runs and sweeps you made, listed, browsable and comparable.

::

    kkiai-runs                     the runs and sweeps under ./outputs and ./multirun, oldest first,
                                   and index.html in the first of those folders
    kkiai-runs DIR [DIR ...]       the same under the given folders (index.html in the first)
    kkiai-runs --json              the same rows as JSON
    kkiai-runs --compare A B       what differs between two runs (or sweep jobs), and compare.html
    kkiai-runs --compare A B --json   the differences as JSON

Nothing is sent anywhere: everything is read from the run directories (:mod:`.runs_index`,
:mod:`.runs_compare`). A folder given that does not exist, or a compared path that is not a run,
exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from .errors import KkiaiError, UsageError
from .pricing import format_cost
from .report.compare_html import COMPARE, write_compare
from .report.index_html import INDEX, write_index
from .runs_compare import compare, render_text
from .runs_index import Entry, entries, short_time
from .terminal import columns, write_stdout

DEFAULT_DIRS = (Path("outputs"), Path("multirun"))
PROG = "kkiai-runs"


def main(argv: list[str] | None = None) -> int:
    """Run ``kkiai-runs``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        if args.compare:
            if args.dirs or args.no_index:
                raise UsageError("--compare A B takes no other folder and writes no index.html")
            return _compare(Path(args.compare[0]), Path(args.compare[1]), out=args.out, as_json=args.json)
        return _list(args.dirs, as_json=args.json, index=not args.no_index)
    except KkiaiError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _list(dirs: Sequence[str], *, as_json: bool, index: bool) -> int:
    if dirs:
        roots = [Path(d) for d in dirs]
        missing = [str(r) for r in roots if not r.is_dir()]
        if missing:
            raise UsageError(f"no such folder: {', '.join(missing)}")
    else:
        roots = [d for d in DEFAULT_DIRS if d.is_dir()]
    listed, incomplete = entries(roots)
    if incomplete:
        print(f"{PROG}: the search stopped early: not every folder was looked at", file=sys.stderr)
    written = True
    if index and roots:
        write = partial(write_index, listed=listed, incomplete=incomplete)
        written = _page(write, roots[0] / INDEX, "index")
    if as_json:
        code = write_stdout(json.dumps([e.to_json() for e in listed], indent=2))
    elif listed:
        code = write_stdout(table(listed))
    else:
        where = " or ".join(str(r) for r in roots or DEFAULT_DIRS)
        print(f"{PROG}: no runs or sweeps under {where}", file=sys.stderr)
        code = 0
    return code or (0 if written else 1)


def _page(write: Callable[[Path], Path], target: Path, label: str) -> bool:
    """Write a page, saying where (or why not: the listing or comparison still counts)."""
    try:
        write(target)
    except OSError as exc:
        print(f"{PROG}: could not write {target}: {exc.strerror or exc}", file=sys.stderr)
        return False
    print(f"{label}: {target}", file=sys.stderr)
    return True


def table(listed: Sequence[Entry]) -> str:
    """One line a run or sweep; the (estimated) cost column only when something was priced."""
    priced = any(e.cost is not None for e in listed)
    header = ["STARTED", "PIPELINE", "STATUS", "CREATED", "REUSED", "PREDICT", *(["COST"] * priced), "PATH"]
    rows = [header]
    for e in listed:
        cost = [format_cost(e.cost)] if priced else []
        path = str(e.path) + (f" (sweep, {e.jobs} jobs)" if e.kind == "sweep" else "")
        if e.problem:
            path += f"  [{e.problem}]"
        rows.append(
            [
                short_time(e.started_at) or "-",
                e.pipeline or "-",
                e.status,
                _count(e.created),
                _count(e.reused),
                f"{e.predict_time:.1f}s" if e.predict_time is not None else "-",
                *cost,
                path,
            ]
        )
    return columns(rows)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _compare(a: Path, b: Path, *, out: str | None, as_json: bool) -> int:
    comparison = compare(a, b)
    target = Path(out) if out else Path(COMPARE)
    if target.is_dir():
        target = target / COMPARE
    if not target.parent.is_dir():
        raise UsageError(f"--out {target}: no such folder {target.parent}")
    text = (
        json.dumps(comparison.to_json(), indent=2, ensure_ascii=False) if as_json else render_text(comparison)
    )
    code = write_stdout(text)
    written = _page(partial(write_compare, comparison=comparison), target, "side by side")
    return code or (0 if written else 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="List the runs and sweeps under ./outputs and ./multirun (or DIRs) and write index.html "
        "there; or compare two runs.",
    )
    parser.add_argument(
        "dirs", nargs="*", metavar="DIR", help="folders to look in (default: outputs multirun)"
    )
    parser.add_argument("--json", action="store_true", help="print the list (or the differences) as JSON")
    parser.add_argument("--no-index", action="store_true", help="do not write index.html")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="show what differs between two runs or sweep jobs"
    )
    parser.add_argument(
        "--out", metavar="PATH", help=f"where --compare writes its page (default: ./{COMPARE})"
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
