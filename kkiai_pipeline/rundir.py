"""The run directory's manifest, ``run.json``: what was asked, sent, received and stored.

Two files keep it:

- ``run.json``, the whole record, rewritten atomically (temporary file, fsync, rename) at the start,
  while the run goes on each time the journal has grown by as much as run.json (at most once a
  second), and at the end;
- ``run.journal``, one JSON line per step change, appended as it happens.

What money depends on (intents to create, prediction ids) is not kept here but in the ledger
(:mod:`kkiai_pipeline.ledger`), durably, before each side effect.

Rewriting a whole run.json at every change would cost O(steps) per change, O(steps²) per run; the
journal keeps each change O(1). Loading replays the journal over run.json; a finished run removes
the journal. The API token is never part of either: both are written through
:func:`kkiai_pipeline.secrets.redact`, whatever an input or an error message held.

Step statuses: ``pending`` (not started), ``running`` (rendering, creating or waiting), ``succeeded``,
``failed``, ``canceled``, ``aborted`` (as the prediction ended), ``skipped`` (a dependency did not
succeed), ``unresolved`` (a create's answer was lost and the service cannot yet tell whether it
arrived: nothing is sent again until it can).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from types import UnionType
from typing import IO, Any, Literal, Union, get_args, get_origin, get_type_hints

from .artifacts import Artifact
from .errors import StateError
from .pricing import Price, price_json
from .secrets import redact

StepStatus = Literal[
    "pending", "running", "succeeded", "failed", "canceled", "aborted", "skipped", "unresolved"
]
RunStatus = Literal["running", "succeeded", "failed", "canceled"]
Obtained = Literal["created", "reused", "shared", "reattached", "recovered"]
MANIFEST = "run.json"
JOURNAL = "run.journal"
SCHEMA_VERSION = 2  # of run.json; docs/run.schema.json describes it
SNAPSHOT_INTERVAL = 1.0  # seconds between rewrites of run.json while a run goes on
INDENTED_PREDICTIONS = 1000  # run.json is indented for people to read, up to this many predictions

#: The moves a step's status may make; anything else is a bug (StateError).
_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "skipped"}),
    "running": frozenset({"succeeded", "failed", "canceled", "aborted", "unresolved"}),
}
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted", "skipped", "unresolved"})
#: How a result was obtained when this run paid for it (a resume re-attaching to its own earlier create, a
#: lost answer found in the list); "reused" and "shared" results were paid for elsewhere.
PAID: frozenset[str] = frozenset({"created", "recovered", "reattached"})


def utc_now() -> str:
    """The current time as RFC 3339 UTC with a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepRecord:
    """What happened to one step (or one item of a ``foreach`` step).

    Its ``status`` changes only through :meth:`start`, :meth:`succeed`, :meth:`end` and :meth:`skip`,
    which refuse impossible moves.
    """

    model: str
    version: str
    depends_on: list[str] = field(default_factory=list)
    status: StepStatus = "pending"
    input: dict[str, Any] | None = None
    key: str | None = None  # the prediction's ledger key
    obtained: Obtained | None = None  # how its result was obtained
    prediction_id: str | None = None
    error: str | None = None
    note: str | None = None  # why it ran or was reused (on a rerun or resume)
    started: str | None = None  # when this run started the step (our clock)
    ended: str | None = None
    created_at: str | None = None  # the API's timestamps of the prediction
    started_at: str | None = None
    completed_at: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    logs: str | None = None  # the prediction's logs file, relative to the run directory (if it had any)
    outputs: list[Artifact] = field(default_factory=list)
    output: Any = None  # the API's output shape, data: URIs shortened (see outputs.kept_output)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every prediction made for this step
    items: list[StepRecord] = field(default_factory=list)  # a foreach step: one record per item
    index: int | None = None  # an item: its position
    item: Any = None  # an item: the value its templates saw as {{ item }}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        """A StepRecord from its run.json form (items and outputs included); unknown keys are ignored.

        Raises ValueError if a value is missing or of the wrong type (read as :func:`load_record` does).
        """
        problems: list[str] = []
        step = _value(data, cls, "step", problems)
        if problems:
            raise ValueError("; ".join(problems))
        assert isinstance(step, cls)
        return step

    def _move(self, status: StepStatus) -> None:
        if status not in _MOVES.get(self.status, frozenset()):
            raise StateError(f"a step cannot go from {self.status} to {status}")
        self.status = status

    def start(self) -> None:
        """pending -> running."""
        self._move("running")
        self.started, self.error = utc_now(), None

    def succeed(self, *, outputs: list[Artifact], output: Any = None) -> None:
        """running -> succeeded, with the files stored for it."""
        self._move("succeeded")
        self.outputs, self.output, self.ended = outputs, output, utc_now()

    def end(self, status: StepStatus, error: str) -> None:
        """running -> failed, canceled, aborted or unresolved, saying why."""
        self._move(status)
        self.error, self.ended = error, utc_now()

    def skip(self, error: str) -> None:
        """pending -> skipped (a dependency did not succeed)."""
        self._move("skipped")
        self.error = error

    @property
    def seconds(self) -> float | None:
        """How long this run spent on the step, if it started and ended."""
        start, end = _epoch(self.started), _epoch(self.ended)
        return round(end - start, 3) if start is not None and end is not None else None


def step_json(step: StepRecord) -> dict[str, Any]:
    """A step's record as run.json holds it: what ``dataclasses.asdict`` gives, without its deep copies
    (the values are JSON data, written out at once). A foreach step of 10,000 items is serialized at
    every snapshot: asdict spent most of a snapshot copying what json.dumps then read once."""
    data = {name: getattr(step, name) for name in _STEP_FIELDS}
    data["outputs"] = [{name: getattr(a, name) for name in _ARTIFACT_FIELDS} for a in step.outputs]
    data["items"] = [step_json(item) for item in step.items]
    return data


_STEP_FIELDS = tuple(f.name for f in fields(StepRecord))
_ARTIFACT_FIELDS = tuple(f.name for f in fields(Artifact))


@dataclass(frozen=True)
class Totals:
    """What a run obtained: predictions it paid for, results it reused, the ``predict_time`` (the
    seconds the service billed) of those it paid for, and their estimated ``cost`` from the run's price
    table (:mod:`kkiai_pipeline.pricing`): None when the run has no prices, or a prediction it paid for
    has none (its model is not in the table, or a per-second price lacks the predict_time)."""

    created: int = 0
    reused: int = 0
    predict_time: float = 0.0
    cost: float | None = None


def predict_seconds(leaf: StepRecord) -> float | None:
    """The ``predict_time`` in a step's (or item's) metrics, if it is a number."""
    seconds = leaf.metrics.get("predict_time")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < math.inf:
        return float(seconds)
    return None


def leaves(steps: Mapping[str, StepRecord]) -> Iterator[StepRecord]:
    """Every record that stands for one prediction: a step, or each item of a ``foreach`` step."""
    for step in steps.values():
        yield from step.items if step.items else (step,)


@dataclass
class RunRecord:
    """The whole run; ``save()`` writes it to ``<run_dir>/run.json``.

    ``status`` changes only through :meth:`start` and :meth:`finish`.
    """

    run_dir: Path
    pipeline: str
    api: dict[str, Any]
    steps: dict[str, StepRecord]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str | None = None
    seed: int | None = None
    status: RunStatus = "running"
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    traffic: dict[str, Any] = field(default_factory=dict)  # request, retry and download counters
    prices: dict[str, Price] = field(default_factory=dict)  # the price table's entries for its models
    _journal: IO[str] | None = field(default=None, repr=False, compare=False)
    _snapshot_at: float = field(default=0.0, repr=False, compare=False)
    _snapshot_chars: int = field(default=0, repr=False, compare=False)  # run.json's size when last written
    _journaled_chars: int = field(default=0, repr=False, compare=False)  # journal written since then

    @property
    def seconds(self) -> float | None:
        """How long the run (or its last resume) took, if it finished."""
        start, end = _epoch(self.started_at), _epoch(self.finished_at)
        return round(end - start, 3) if start is not None and end is not None else None

    def totals(self) -> Totals:
        """Predictions created and reused, the predict time paid for and its estimated cost, over all
        steps and items."""
        created = reused = 0
        predict_time = cost = 0.0
        priced = bool(self.prices)
        for leaf in leaves(self.steps):
            price = self.prices.get(leaf.model)
            # A prediction that failed (or was canceled) was created, and may be billed for the time it
            # ran: counted as paid, its time unknown (its cost too, when the price is per second).
            ended_badly = sum(1 for a in leaf.attempts if a.get("prediction_id") and a.get("error"))
            created += ended_badly
            if ended_badly and price is not None:
                each = price.cost(None)
                priced = priced and each is not None
                cost += (each or 0.0) * ended_badly
            if leaf.obtained in PAID:
                created += 1
                seconds = predict_seconds(leaf)
                predict_time += seconds or 0.0
                each = price.cost(seconds) if price is not None else None
                priced = priced and each is not None
                cost += each or 0.0
            elif leaf.obtained is not None:
                reused += 1
        return Totals(created, reused, round(predict_time, 3), round(cost, 6) if priced else None)

    def cost_of(self, leaf: StepRecord) -> float | None:
        """The estimated cost of one step or item, if this run paid for it and its model is priced."""
        price = self.prices.get(leaf.model)
        if leaf.obtained not in PAID or price is None:
            return None
        return price.cost(predict_seconds(leaf))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "source": self.source,
            "seed": self.seed,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "api": self.api,
            "traffic": self.traffic,
            "prices": price_json(self.prices),
            "totals": asdict(self.totals()),
            "steps": {sid: step_json(step) for sid, step in self.steps.items()},
        }

    def start(self) -> None:
        """The run (or its resume) begins: running, written out; an earlier attempt's journal (already
        read into what this run resumes) goes, so a crash now replays only this attempt's changes."""
        self.status, self.started_at, self.finished_at = "running", utc_now(), None
        self.save()
        (self.run_dir / JOURNAL).unlink(missing_ok=True)

    def finish(self, *, interrupted: bool) -> None:
        """The run ends: its status follows from its steps (canceled if interrupted); run.json is final."""
        if interrupted:
            self.status = "canceled"
        else:
            ok = all(s.status == "succeeded" for s in self.steps.values())
            self.status = "succeeded" if ok else "failed"
        self.finished_at = utc_now()
        self.close()

    def save(self, *, compact: bool = False) -> None:
        """Write the whole record to run.json now (``compact``: without indentation, for speed).

        A record of more than ``INDENTED_PREDICTIONS`` predictions is always compact: json indents in
        pure Python, ten times slower than its compact C encoder (seconds for a 10,000-item foreach).
        """
        compact = compact or sum(len(s.items) or 1 for s in self.steps.values()) > INDENTED_PREDICTIONS
        written = write_json_atomic(self.run_dir / MANIFEST, self.to_json(), indent=None if compact else 2)
        self._snapshot_at = time.monotonic()
        self._snapshot_chars, self._journaled_chars = written, 0

    def note(self, step_id: str, *, item: int | None = None) -> None:
        """Record a change of one step (or one ``item`` of it): appended to the journal; run.json is
        rewritten now and then. (What money depends on is in the ledger, durably, already.)

        run.json is rewritten once the journal has grown by as much as run.json's size since the last
        rewrite (and at least ``SNAPSHOT_INTERVAL`` seconds have passed): each rewrite is paid for by
        as many characters of journal, so a run's snapshots together cost at most about what its
        journal does, linear in its changes, however large its steps (a foreach of 10,000 items).
        """
        if self._journal is None:
            self._journal = (self.run_dir / JOURNAL).open("a", encoding="utf-8")
        step = self.steps[step_id]
        entry: dict[str, Any] = {
            "step": step_id,
            "record": step_json(step if item is None else step.items[item]),
        }
        if item is not None:
            entry["item"] = item
        line = redact(json.dumps(entry, default=str))
        self._journal.write(line + "\n")
        self._journal.flush()
        self._journaled_chars += len(line) + 1
        if (
            self._journaled_chars >= self._snapshot_chars
            and time.monotonic() - self._snapshot_at >= SNAPSHOT_INTERVAL
        ):
            self.save(compact=True)

    def close(self) -> None:
        """Write the final run.json; the journal, now contained in it, is removed."""
        self.save()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        (self.run_dir / JOURNAL).unlink(missing_ok=True)


# Reading run.json back. One reader, driven by the dataclasses above, serves resuming (strict:
# load_record) and the reports and sweep summaries (tolerant: read_record), which are also made for
# runs that crashed, never started, or were written by another version.

_SHOWN_PROBLEMS = 5
#: v1 files (without schema_version) said in ``cache`` how a result was got: "hit" or "stored".
_V1_CACHE: dict[str, Obtained] = {"hit": "reused", "stored": "created"}
#: Read in place of a value that is missing or of the wrong type: where the dataclass has no default,
#: or one that would invent a value (a new run id, the time of reading).
_STAND_INS: dict[type, dict[str, Callable[[], Any]]] = {
    RunRecord: {"pipeline": str, "api": dict, "steps": dict, "run_id": str, "started_at": str},
    StepRecord: {"model": str, "version": str},
}
#: Fields with a default that a file must still hold (besides those without a default).
_REQUIRED: dict[type, frozenset[str]] = {RunRecord: frozenset({"status", "started_at"})}
_BAD: Any = object()  # a value that is not what its field's type says (the problem is noted)


@dataclass(frozen=True)
class Reading:
    """What :func:`read_record` found in a run directory.

    ``record`` is None when run.json is missing or cannot be read at all, and ``problems`` says why.
    Otherwise each value that was missing or of the wrong type was replaced (by its default, an empty
    text or an empty list) and ``problems`` names it; unknown keys are ignored without a word.
    """

    run_dir: Path
    record: RunRecord | None
    problems: tuple[str, ...] = ()

    @property
    def problem(self) -> str | None:
        """The problems in one line (the first few), or None if there are none."""
        if not self.problems:
            return None
        shown = "; ".join(self.problems[:_SHOWN_PROBLEMS])
        more = len(self.problems) - _SHOWN_PROBLEMS
        return shown + (f" (and {more} more)" if more > 0 else "")


def read_record(run_dir: Path) -> Reading:
    """The run in ``run_dir`` as far as it can be read: run.json with the journal replayed over it.

    Never raises (beyond MemoryError and the like): a report or a sweep summary is made for any run
    directory, whatever it holds.
    """
    try:
        raw = _read_manifest(run_dir)
    except FileNotFoundError:
        return Reading(run_dir, None, ("no run.json (the run did not start)",))
    except (OSError, ValueError, RecursionError) as exc:  # decoding and JSON errors are ValueErrors
        return Reading(run_dir, None, (f"run.json could not be read: {exc}",))
    if not isinstance(raw, dict):
        return Reading(run_dir, None, ("run.json does not hold an object",))
    problems: list[str] = []
    try:
        record = _run_from_json(run_dir, raw, problems)
    except RecursionError:  # items nested hundreds deep: not a file this program wrote
        return Reading(run_dir, None, ("run.json is nested too deeply to read",))
    return Reading(run_dir, record, tuple(problems))


def load_record(run_dir: Path) -> RunRecord:
    """The run in ``run_dir``, to resume it: as :func:`read_record`, but strict.

    Raises OSError if run.json cannot be read, ValueError if it is not JSON, or if any value in it is
    missing or of the wrong type (the message names them); a torn last journal line is ignored.
    """
    raw = _read_manifest(run_dir)
    if not isinstance(raw, dict):
        raise ValueError("run.json does not hold an object")
    problems: list[str] = []
    record = _run_from_json(run_dir, raw, problems)
    if problems:
        raise ValueError(f"run.json: {Reading(run_dir, None, tuple(problems)).problem}")
    record.run_id = record.run_id or uuid.uuid4().hex  # a file older than run ids
    return record


def _read_manifest(run_dir: Path) -> Any:
    return json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))


def _run_from_json(run_dir: Path, raw: dict[str, Any], problems: list[str]) -> RunRecord:
    version = raw.get("schema_version")
    if version is not None and not (_is_int(version) and 1 <= version <= SCHEMA_VERSION):
        problems.append(
            f"schema_version: {version!r:.40} is not one this version reads (1 to {SCHEMA_VERSION})"
        )
    steps = raw.get("steps")
    if isinstance(steps, dict):
        steps = dict(steps)
        _replay(steps, run_dir / JOURNAL)
    values = _fields_of(RunRecord, {**raw, "steps": steps} if "steps" in raw else raw, "", problems)
    if version is None:  # a v1 file: what it called "cache", v2 calls "obtained"
        _upgrade_v1(values["steps"], raw.get("steps"))
    return RunRecord(run_dir=run_dir, **values)


def _upgrade_v1(steps: dict[str, StepRecord], raw_steps: Any) -> None:
    for sid, step in steps.items():
        raw = raw_steps.get(sid) if isinstance(raw_steps, dict) else None
        cache = raw.get("cache") if isinstance(raw, dict) else None
        if step.obtained is None and isinstance(cache, str) and cache in _V1_CACHE:
            step.obtained = _V1_CACHE[cache]


def _fields_of(cls: type, raw: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    """The keyword arguments of ``cls`` read from ``raw``, as its fields' types say; ``_BAD`` if a
    field without a default or a stand-in is missing or wrong."""
    stand_ins, required = _STAND_INS.get(cls, {}), _REQUIRED.get(cls, frozenset())
    hints = _hints(cls)
    values: dict[str, Any] = {}
    whole = True
    for f in fields(cls):
        if f.name not in hints:
            continue
        needed = f.name in required or (f.default is MISSING and f.default_factory is MISSING)
        value = _BAD
        if f.name in raw:
            value = _value(raw[f.name], hints[f.name], where + f.name, problems)
        elif needed:
            problems.append(f"{where}{f.name}: missing")
        if value is not _BAD:
            values[f.name] = value
        elif f.name in stand_ins:
            values[f.name] = stand_ins[f.name]()
        elif f.default is MISSING and f.default_factory is MISSING:
            whole = False
    return values if whole else _BAD


def _value(raw: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """``raw`` if it is what ``hint`` says (containers rebuilt without their bad members), else
    ``_BAD`` with the problem noted."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return raw
    if origin in (Union, UnionType):  # only ``X | None`` is used
        inner = next(a for a in args if a is not type(None))
        return None if raw is None else _value(raw, inner, where, problems)
    if origin is list and isinstance(raw, list):
        listed = [_value(v, args[0], f"{where}[{i}]", problems) for i, v in enumerate(raw)]
        return [v for v in listed if v is not _BAD]
    if origin is dict and isinstance(raw, dict):
        if args[1] is Any:
            return raw
        mapped = {k: _value(v, args[1], f"{where}.{k}", problems) for k, v in raw.items()}
        return {k: v for k, v in mapped.items() if v is not _BAD}
    if isinstance(hint, type) and is_dataclass(hint) and isinstance(raw, dict):
        values = _fields_of(hint, raw, where + ".", problems)
        return _BAD if values is _BAD else hint(**values)
    if _is_a(raw, hint, origin, args):
        return raw
    problems.append(f"{where}: {raw!r:.60} is not {_describe(hint, origin, args)}")
    return _BAD


def _is_a(raw: Any, hint: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    if origin is Literal:
        return isinstance(raw, str) and raw in args
    if hint is int:
        return _is_int(raw)
    return isinstance(hint, type) and origin is None and not is_dataclass(hint) and isinstance(raw, hint)


def _describe(hint: Any, origin: Any, args: tuple[Any, ...]) -> str:
    if origin is Literal:
        return "one of " + ", ".join(args)
    if origin is list:
        return "a list"
    if origin is dict or is_dataclass(hint):
        return "an object"
    return {str: "a text", int: "an integer"}.get(hint, getattr(hint, "__name__", str(hint)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@cache
def _hints(cls: type) -> dict[str, Any]:
    """The types of the fields that run.json holds (not the run directory, not private state)."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if f.init and f.name != "run_dir" and f.name[0] != "_"}


def _replay(steps: dict[str, Any], path: Path) -> None:
    """Apply the journal's entries, in order, to the steps read from run.json.

    Lines that are not whole entries (the one a crash cut short, or damage) are passed over, and so is
    an entry for an item the journal never listed (items are journaled with their step first).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        return  # an unreadable journal: run.json alone is the best account there is
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("step"), str)):
            continue
        record, item = entry.get("record"), entry.get("item")
        if not isinstance(record, dict):
            continue
        if item is None:
            steps[entry["step"]] = record
            continue
        step = steps.get(entry["step"])
        items = step.get("items") if isinstance(step, dict) else None
        if isinstance(items, list) and _is_int(item) and 0 <= item < len(items):
            items[item] = record


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2) -> int:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a mix; returns
    the number of characters written.

    The file and its directory are fsynced: a prediction id written here survives a power cut. The API
    token's value is masked.
    """
    text = redact(json.dumps(data, indent=indent, ensure_ascii=False, default=str)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return len(text)


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
