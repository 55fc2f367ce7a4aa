"""The API token's value, kept out of everything kkiai-run sends as data, writes or prints.

The token reaches the program once, from the environment, and belongs in one place only: the
``Authorization`` header of requests to the API. It is *registered* here when it is read
(:func:`register`, called by the settings and by ``cli.main``); from then on:

- :func:`redact` replaces its value with :data:`MASK` in a text. It is applied at the boundaries where
  text leaves the program: every logging handler (:class:`RedactingFilter`, declared in
  ``conf/hydra/job_logging/kkiai.yaml`` and added to the root logger's handlers by :func:`register`),
  every error message (``KkiaiError.__str__``, and the messages built from API answers in
  ``api/errors.py``), ``run.json`` and its journal (``rundir``), and ``report.html``;
- :func:`find` locates the token inside data that must not carry it at all (a create's input, the
  pipeline's static values, the command line's words), so the caller can refuse it, naming where.

Values shorter than :data:`MIN_LENGTH` are not registered: real tokens are 40 characters, and hiding
every ``t`` from the logs of a test that uses ``KKIAI_API_TOKEN=t`` would mangle them to no purpose.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

MASK = "[redacted]"
MIN_LENGTH = 8

_lock = threading.Lock()
_values: tuple[str, ...] = ()  # every form of every registered secret, longest first


def register(value: str | None) -> None:
    """Hide ``value`` from now on (the process's lifetime); None, blank and short values are ignored.

    Also puts a :class:`RedactingFilter` on the root logger's handlers, for logging set up without
    the shipped configuration.
    """
    global _values
    value = (value or "").strip()
    if len(value) < MIN_LENGTH:
        return
    # As it is, and as JSON, HTML and URLs escape it.
    forms = {value, json.dumps(value)[1:-1], html.escape(value), quote(value, safe="")}
    with _lock:
        _values = tuple(sorted(set(_values) | forms, key=len, reverse=True))
    install_filter()


def forget() -> None:
    """Forget every registered value (tests)."""
    global _values
    with _lock:
        _values = ()


def active() -> bool:
    """Whether any value is registered."""
    return bool(_values)


def redact(text: str) -> str:
    """``text`` with every registered value replaced by :data:`MASK`."""
    for value in _values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def contains(text: str) -> bool:
    """Whether ``text`` holds a registered value."""
    return any(value in text for value in _values)


def redact_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` whose strings (keys included) are redacted."""
    if not _values:
        return data
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    return data


def find(data: Any) -> tuple[str, ...] | None:
    """The path (keys and list indexes) to the first string in ``data`` holding a registered value,
    or None; a key holding one is found too (its path ends with that key, shown masked)."""
    if not _values:
        return None
    return _find(data, ())


def _find(data: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    if isinstance(data, str):
        return path if contains(data) else None
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = (*path, redact(str(key)))
            if contains(str(key)):
                return here
            found = _find(value, here)
            if found is not None:
                return found
    elif isinstance(data, list | tuple):
        for index, value in enumerate(data):
            found = _find(value, (*path, str(index)))
            if found is not None:
                return found
    return None


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message (arguments merged in), its traceback and
    its stack, before any formatter sees them. Never drops a record."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _values:
            return True
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_filter(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to each handler of ``logger`` (the root logger) that has none.

    A filter on a handler, not on the logger: a logger's own filters do not see the records its
    children propagate to it.
    """
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def refuse_in_body(input: Mapping[str, Any]) -> None:
    """Raise StepInputError if ``input`` holds the API token's value: the last check before a create,
    for values computed at run time (the pipeline's static values were refused at planning)."""
    from .errors import StepInputError  # errors masks with this module: import late

    where = find(dict(input))
    if where is not None:
        raise StepInputError(
            f"input.{'.'.join(where)} holds the API token's value: refused before sending (no prediction "
            "made); the token belongs only in the environment"
        )
