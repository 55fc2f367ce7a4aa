"""What the sandbox sends: prediction objects, their logs, problem+json bodies and error pages.

Prediction ``urls`` deliberately point at ``https://api.replicate.com/v1/...``, as pass-through
proxies return them: clients must build their own URLs from their base URL, not follow these.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse

from . import models
from .config import SyncFinalStatus
from .models import OutputFile
from .records import FileRef, Prediction
from .store import TERMINAL, Snapshot

UPSTREAM_API = "https://api.replicate.com/v1"
UPSTREAM_WEB = "https://replicate.com/p"
PROBLEM_JSON = "application/problem+json"

Link = Callable[[FileRef], str]


def timestamp(epoch: float) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``: ``2024-10-04T18:07:37.245123Z``."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def data_uri(file: OutputFile) -> str:
    """``file`` as a ``data:<mime>;base64,...`` URI."""
    return f"data:{file.media_type};base64,{base64.b64encode(file.content).decode('ascii')}"


def prediction_json(prediction: Prediction, snapshot: Snapshot, *, link: Link) -> dict[str, Any]:
    """The prediction object as GET returns it; ``data_removed`` once retention removed the output."""
    p, s = prediction, snapshot
    doc: dict[str, Any] = {
        "id": p.id,
        "model": p.model.ref,
        "version": p.model.version,
        "input": p.input,
        "logs": logs(p, s),
        "output": output(p, s, link=link),
        "data_removed": s.removed,
        "error": s.error,
        "status": s.status,
        "created_at": timestamp(p.created),
    }
    if p.deadline is not None:
        doc["deadline"] = timestamp(p.deadline)
    if s.started is not None:
        doc["started_at"] = timestamp(s.started)
    if s.completed is not None:
        doc["completed_at"] = timestamp(s.completed)
        doc["metrics"] = metrics(p, s)
    doc["urls"] = {
        "cancel": f"{UPSTREAM_API}/predictions/{p.id}/cancel",
        "get": f"{UPSTREAM_API}/predictions/{p.id}",
        "web": f"{UPSTREAM_WEB}/{p.id}",
    }
    return doc


def sync_json(
    prediction: Prediction,
    snapshot: Snapshot,
    *,
    link: Link,
    final_status: SyncFinalStatus,
    data_link: Link | None = None,
) -> dict[str, Any]:
    """The prediction object as a ``Prefer: wait`` create returns it.

    Finished in time: the recorded API says ``processing`` with the full output (``final_status``)
    and no ``completed_at``/``metrics``. Failed, canceled or aborted: as is. Not finished: ``starting``,
    which replicate-python 1.0.7 takes as its cue to poll. ``data_link`` (``data:`` URIs, as the real
    API gives in sync mode) replaces ``link`` for the files of a prediction that finished in time.
    """
    if snapshot.status == "succeeded" and data_link is not None:
        link = data_link
    doc = prediction_json(prediction, snapshot, link=link)
    if snapshot.status == "succeeded" and final_status == "processing":
        doc["status"] = "processing"
        doc.pop("completed_at", None)
        doc.pop("metrics", None)
    elif snapshot.status not in TERMINAL:
        doc["status"] = "starting"
    return doc


def output(prediction: Prediction, snapshot: Snapshot, *, link: Link) -> Any:
    """A list of links for list models, one link for single-file models; None until succeeded, and
    once the data is removed."""
    if snapshot.status != "succeeded" or snapshot.removed:
        return None
    links = [link(file) for file in snapshot.files]
    if prediction.model.output_kind == "list":
        return links
    return links[-1] if links else None


def metrics(prediction: Prediction, snapshot: Snapshot) -> dict[str, Any]:
    """``predict_time`` (compute only), ``total_time``, and ``image_count`` for image models."""
    completed = snapshot.completed if snapshot.completed is not None else prediction.due
    started = snapshot.started if snapshot.started is not None else completed
    values: dict[str, Any] = {
        "predict_time": round(completed - started, 6),
        "total_time": round(completed - prediction.created, 6),
    }
    if snapshot.status == "succeeded" and models.counts_images(prediction.model):
        values["image_count"] = len(snapshot.files)
    return values


def logs(prediction: Prediction, snapshot: Snapshot) -> str | None:
    """The seed line and tqdm-like progress so far; None once canceled (as the real API does) or aborted."""
    if snapshot.status in ("canceled", "aborted"):
        return None
    if snapshot.status == "starting":
        return ""
    if snapshot.started is None:  # failed before it started: nothing ran
        return f"{snapshot.error}\n"
    total = prediction.steps
    duration = prediction.due - prediction.started
    lines = [f"Using seed: {prediction.seed}"]
    for quarter in range(5):
        if quarter / 4 <= snapshot.progress:
            lines.append(progress_line(total * quarter // 4, total, duration=duration))
    if snapshot.error is not None:
        lines.append(snapshot.error)
    return "\n".join(lines) + "\n"


def progress_line(done: int, total: int, *, duration: float) -> str:
    """``  50%|#####     | 25/50 [00:01<00:01, 25.00it/s]``, as tqdm writes it."""
    percent = 100 * done // total
    elapsed = duration * done / total
    rate = total / duration if duration > 0 else float(total)
    bar = "#" * (percent // 10)
    timing = f"{_clock(elapsed)}<{_clock(duration - elapsed)}, {rate:.2f}it/s"
    return f"{percent:>4d}%|{bar:<10}| {done}/{total} [{timing}]"


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 60:02d}:{whole % 60:02d}"


def problem(status: int, detail: str, *, title: str | None = None, **extra: Any) -> dict[str, Any]:
    """A problem+json body: ``title`` (when given), ``detail``, ``status`` and any extra members."""
    body: dict[str, Any] = {"title": title} if title is not None else {}
    body.update(detail=detail, status=status, **extra)
    return body


def unauthenticated() -> dict[str, Any]:
    """401, exactly as recorded."""
    return problem(401, "You did not pass a valid authentication token", title="Unauthenticated")


def not_found() -> dict[str, Any]:
    """404 for an unknown prediction, version, file or path."""
    return problem(404, "Not found.")


def invalid_version() -> dict[str, Any]:
    """422 for an unknown version or a bare ``owner/name``."""
    return problem(
        422,
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
        title="Invalid version or not permitted",
    )


def throttled(retry_after: int) -> dict[str, Any]:
    """429, as the API throttles: the wait is in the body's ``retry_after`` (seconds)."""
    detail = f"Request was throttled. Your rate limit resets in ~{retry_after}s."
    return problem(429, detail, retry_after=retry_after)


def too_large(limit: int) -> dict[str, Any]:
    """The 413 of a request body over the sandbox's ``max_body_bytes``."""
    return problem(413, f"The request body is larger than {limit} bytes.", title="Payload too large")


def server_error(status: int) -> dict[str, Any]:
    """A 5xx problem+json body, as the API itself answers one."""
    titles = {500: "Internal Server Error", 503: "Service Unavailable"}
    title = titles.get(status, "Server Error")
    return problem(status, "The server had a problem handling the request; try again.", title=title)


def edge_page(status: int) -> str:
    """A 5xx HTML page, as the edge proxy in front of the API answers one."""
    reasons = {
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Time-out",
    }
    title = f"{status} {reasons.get(status, 'Server Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """``body`` as application/problem+json, with its ``status`` as the HTTP status."""
    return JSONResponse(body, status_code=int(body["status"]), media_type=PROBLEM_JSON, headers=headers)


def edge_response(status: int) -> HTMLResponse:
    """``edge_page(status)`` as an HTML response with that status."""
    return HTMLResponse(edge_page(status), status_code=status)
