"""Batches from files: the template functions ``lines()``, ``csv()`` and ``jsonl()``.

Each reads a file relative to the pipeline file, under the same rules as ``file()`` (see
:mod:`.localfiles`: the pipeline's folder or ``allowed_dirs``, symlinks resolved, regular files only),
and gives a list of rows, e.g. for ``foreach: "{{ lines('prompts.txt') }}"``:

- ``lines(name)``: one text per line, stripped of surrounding whitespace; blank lines and lines whose
  first non-blank character is ``#`` (comments) are left out.
- ``csv(name)``: one mapping per row, keyed by the header (the first row): ``{{ item.prompt }}``. Values
  are texts, as CSV has no types: write ``{{ item.seed | int }}`` or ``| float`` where the model wants a
  number. Blank lines are left out; a row with more or fewer fields than the header is an error.
- ``jsonl(name)``: one JSON object per line, its values typed as JSON types them; blank lines are left
  out.

Files are UTF-8 (a byte-order mark is allowed), at most :data:`MAX_BYTES` and :data:`MAX_ROWS` rows.
A run reads each file once: planning checks every row, and execution runs the very rows it checked.
Each row remembers its line in the file, so that a problem with row 1,234 names the line to fix.
"""

from __future__ import annotations

import csv as csvlib
import io
import json
from collections.abc import Callable
from typing import Any

from .templating import Measured

MAX_BYTES = 50_000_000  # a file of rows; a 10,000-prompt file is about 1 MB
MAX_ROWS = 100_000


class RowsProblem(ValueError):
    """A file of rows cannot be read, or one of its lines is not a row; the message names the line."""


class Rows(Measured):
    """The rows read from a file; ``line_of(i)`` is the line row ``i`` starts on."""

    def __init__(self, rows: list[Any], *, source: str, lines: list[int]) -> None:
        super().__init__(rows)
        self._source = source  # underscored: templates cannot read it
        self._lines = lines

    def where(self, index: int) -> str:
        """Row ``index`` as a message names it: ``prompts.txt line 17``."""
        return f"{self._source} line {self._lines[index]}"


Reader = Callable[[str, str, int], bytes]  # (name, function name, byte limit) -> the file's bytes


class RowFiles:
    """The row functions over ``read`` (LocalFiles.read_confined); each file is parsed once."""

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._parsed: dict[tuple[str, str], Rows] = {}

    def functions(self) -> dict[str, Callable[[str], Rows]]:
        return {"lines": self.lines, "csv": self.csv, "jsonl": self.jsonl}

    def lines(self, name: str) -> Rows:
        """The non-blank, non-comment lines of ``name``, stripped."""
        return self._rows("lines", name, _parse_lines)

    def csv(self, name: str) -> Rows:
        """The rows of the CSV file ``name`` as mappings keyed by its header."""
        return self._rows("csv", name, _parse_csv)

    def jsonl(self, name: str) -> Rows:
        """The JSON objects of ``name``, one a line."""
        return self._rows("jsonl", name, _parse_jsonl)

    def _rows(self, function: str, name: str, parse: Callable[[str, str], Rows]) -> Rows:
        if not isinstance(name, str):
            raise RowsProblem(f"{function}() takes a path string, not {type(name).__name__}")
        cached = self._parsed.get((function, name))
        if cached is not None:
            return cached
        data = self._read(name, function, MAX_BYTES)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise RowsProblem(f"{function}('{name}'): line {line} is not UTF-8 text") from exc
        rows = parse(text, f"{function}('{name}')")
        if len(rows) > MAX_ROWS:
            raise RowsProblem(f"{function}('{name}') has {len(rows):,} rows, over the limit of {MAX_ROWS:,}")
        rows._source = name
        self._parsed[(function, name)] = rows
        return rows


def _parse_lines(text: str, shown: str) -> Rows:
    rows, numbers = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            rows.append(stripped)
            numbers.append(number)
    return Rows(rows, source=shown, lines=numbers)


def _parse_csv(text: str, shown: str) -> Rows:
    reader = csvlib.reader(io.StringIO(text, newline=""))
    rows: list[Any] = []
    numbers: list[int] = []
    header: list[str] | None = None
    try:
        start = 1
        for fields in reader:
            if len(rows) > MAX_ROWS:
                break
            if len(fields) <= 1 and not "".join(fields).strip():
                start = reader.line_num + 1
                continue
            if header is None:
                header = _header(fields, shown)
            elif len(fields) != len(header):
                raise RowsProblem(
                    f"{shown}: line {start} has {len(fields)} fields, but the header names {len(header)}"
                )
            else:
                rows.append(dict(zip(header, fields, strict=True)))
                numbers.append(start)
            start = reader.line_num + 1
    except csvlib.Error as exc:
        raise RowsProblem(f"{shown}: line {reader.line_num}: {exc}") from exc
    if header is None:
        raise RowsProblem(f"{shown} is empty: its first line must name the columns")
    return Rows(rows, source=shown, lines=numbers)


def _header(fields: list[str], shown: str) -> list[str]:
    names = [f.strip() for f in fields]
    if any(not n for n in names):
        raise RowsProblem(f"{shown}: the header (line 1) has an empty column name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RowsProblem(f"{shown}: the header names {', '.join(duplicates)} more than once")
    return names


def _parse_jsonl(text: str, shown: str) -> Rows:
    rows: list[Any] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError as exc:
            raise RowsProblem(f"{shown}: line {number} is nested too deeply") from exc
        except ValueError as exc:
            raise RowsProblem(f"{shown}: line {number} is not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise RowsProblem(f"{shown}: line {number} is {type(row).__name__}, not a JSON object")
        rows.append(row)
        numbers.append(number)
        if len(rows) > MAX_ROWS:
            break
    return Rows(rows, source=shown, lines=numbers)
