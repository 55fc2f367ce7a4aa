"""The prediction object as the API returns it, parsed leniently into one shape.

Statuses, one by one:

- ``starting``: queued, or a worker is booting;
- ``processing``: the model's ``predict()`` is running;
- ``succeeded``: done, ``output`` holds the result;
- ``failed``: done, ``error`` says why;
- ``canceled``: canceled by a user or by a ``Cancel-After`` deadline while running;
- ``aborted``: the deadline passed before it started (not billed).

Nothing in an answer is trusted: an id must match :data:`PREDICTION_ID` (it becomes part of URLs),
the text fields are cleaned of control characters (they reach logs and the terminal), and
:func:`nodes` walks an output without recursion, so no nesting can crash the walk.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .errors import clean_text

Status = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})
PREDICTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # checked before any URL is built from an id
MAX_LOG_CHARS = 100_000  # the tail of a prediction's logs that is kept


@dataclass(frozen=True)
class Prediction:
    """A snapshot of one prediction."""

    id: str | None
    status: str
    output: Any = None
    error: str | None = None
    logs: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def parse_prediction(body: Any) -> Prediction:
    """Turn a response body into a Prediction.

    Accepts the Replicate shape and the vendor page's odd example ``{"created": <epoch>, "data":
    [{"url": ...}]}``, which we read as a finished prediction with those URLs.

    Raises ValueError for an answer that cannot be one: not an object, no status, or an id that
    does not match :data:`PREDICTION_ID`.
    """
    if not isinstance(body, Mapping):
        raise ValueError("the API answered with something that is not a JSON object")
    if "status" not in body and isinstance(body.get("data"), list):
        return _from_vendor_example(body)
    status = body.get("status")
    if not isinstance(status, str) or not status:
        raise ValueError("the API's answer has no 'status'" if status is None else "its status is no string")
    metrics = body.get("metrics")
    return Prediction(
        id=checked_id(body.get("id")),
        status=clean_text(status, limit=40),
        output=body.get("output"),
        error=_text(body.get("error")),
        logs=_logs(body.get("logs")),
        metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
        created_at=_text(body.get("created_at"), limit=64),
        started_at=_text(body.get("started_at"), limit=64),
        completed_at=_text(body.get("completed_at"), limit=64),
    )


def _from_vendor_example(body: Mapping[str, Any]) -> Prediction:
    # Every entry stays, whatever it holds: a missing or odd URL is then refused where the output
    # is checked, rather than silently dropped here.
    urls = [item.get("url") if isinstance(item, Mapping) else item for item in body["data"]]
    return Prediction(
        id=checked_id(body.get("id")),
        status="succeeded",
        output=urls,
        created_at=_epoch_to_iso(body.get("created")),
    )


def checked_id(value: Any) -> str | None:
    """A prediction id from an answer, or None if it has none; ValueError unless it is well-formed."""
    if value is None:
        return None
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or not PREDICTION_ID.fullmatch(text):
        raise ValueError(f"its prediction id {clean_text(repr(value), limit=60)} is malformed")
    return text


def rfc3339(moment: datetime) -> str:
    """An aware datetime as the API writes times: RFC 3339 with a ``Z`` for UTC."""
    return moment.isoformat().replace("+00:00", "Z")


def _epoch_to_iso(value: Any) -> str | None:
    """An epoch time (the vendor page's ``created``) as RFC 3339, or None if it is no plausible time."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return rfc3339(datetime.fromtimestamp(value, tz=timezone.utc))
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any, *, limit: int = 4000) -> str | None:
    return None if value is None else clean_text(str(value)[: limit * 4], limit=limit)


def _logs(value: Any) -> str | None:
    if not isinstance(value, str):
        return None if value is None else _text(value)
    return clean_text(value[-MAX_LOG_CHARS:], limit=MAX_LOG_CHARS, lines=True)


def output_urls(output: Any) -> list[str]:
    """Every file URL in ``output``: a string, a list, or a dict of them (in order)."""
    return [value for value, _ in nodes(output) if isinstance(value, str) and _looks_like_url(value)]


def nodes(output: Any) -> Iterator[tuple[Any, int]]:
    """Every value in ``output`` (lists and dicts too, before what they hold) with its depth, 1 for
    ``output`` itself, in order. Walked with a stack: no nesting can exhaust the recursion limit."""
    stack: list[tuple[Any, int]] = [(output, 1)]
    while stack:
        value, depth = stack.pop()
        yield value, depth
        if isinstance(value, list):
            stack.extend((item, depth + 1) for item in reversed(value))
        elif isinstance(value, Mapping):
            stack.extend((item, depth + 1) for item in reversed(list(value.values())))


_URL = re.compile(r"^(https?://|data:)", re.IGNORECASE)


def _looks_like_url(text: str) -> bool:
    return bool(_URL.match(text))


def parse_timestamp(text: str | None) -> datetime | None:
    """RFC 3339 with ``Z`` and up to nanoseconds (Python 3.10's fromisoformat takes neither)."""
    if not text:
        return None
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{offset}")
    except ValueError:
        return None
