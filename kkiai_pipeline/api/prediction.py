"""The prediction object as the API returns it, parsed leniently into one shape.

Statuses, one by one:

- ``starting``: queued, or a worker is booting;
- ``processing``: the model's ``predict()`` is running;
- ``succeeded``: done, ``output`` holds the result;
- ``failed``: done, ``error`` says why;
- ``canceled``: canceled by a user or by a ``Cancel-After`` deadline while running;
- ``aborted``: the deadline passed before it started (not billed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Status = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})


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
    """
    if not isinstance(body, Mapping):
        raise ValueError("the API answered with something that is not a JSON object")
    if "status" not in body and isinstance(body.get("data"), list):
        return _from_vendor_example(body)
    if "status" not in body:
        raise ValueError("the API's answer has no 'status'")
    return Prediction(
        id=_str_or_none(body.get("id")),
        status=str(body["status"]),
        output=body.get("output"),
        error=_str_or_none(body.get("error")),
        logs=_str_or_none(body.get("logs")),
        metrics=dict(body.get("metrics") or {}),
        created_at=_str_or_none(body.get("created_at")),
        started_at=_str_or_none(body.get("started_at")),
        completed_at=_str_or_none(body.get("completed_at")),
    )


def _from_vendor_example(body: Mapping[str, Any]) -> Prediction:
    urls = [item["url"] for item in body["data"] if isinstance(item, Mapping) and "url" in item]
    created = body.get("created")
    created_at = None
    if isinstance(created, int | float):
        created_at = datetime.fromtimestamp(created, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    return Prediction(id=_str_or_none(body.get("id")), status="succeeded", output=urls, created_at=created_at)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def output_urls(output: Any) -> list[str]:
    """Every file URL in ``output``: a string, a list, or a dict of them (in order)."""
    if isinstance(output, str):
        return [output] if _looks_like_url(output) else []
    if isinstance(output, list):
        return [u for item in output for u in output_urls(item)]
    if isinstance(output, Mapping):
        return [u for item in output.values() for u in output_urls(item)]
    return []


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
