"""Error responses (problem+json, or anything else an edge proxy sends) -> our ApiError."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ApiError, ValidationFailed

_HINTS = {
    401: "check KKIAI_API_TOKEN",
    402: "add credit to the account",
    404: "the prediction or model does not exist",
}


def error_from_response(response: httpx.Response) -> ApiError:
    """A clear ApiError for an error response; ``ValidationFailed`` for 422 with ``invalid_fields``."""
    body = _json_or_none(response)
    title = _field(body, "title")
    detail = _field(body, "detail")
    status = response.status_code
    request = response.request
    what = f"{request.method} {request.url.path}"
    summary = ": ".join(p for p in (title, detail) if p) or response.reason_phrase or "error"
    message = f"the API answered {status} to {what}: {summary}"
    if status in _HINTS:
        message += f" ({_HINTS[status]})"
    invalid = body.get("invalid_fields") if isinstance(body, dict) else None
    if status == 422 and isinstance(invalid, list):
        fields = "; ".join(
            f"{f.get('field')}: {f.get('description')}" for f in invalid if isinstance(f, dict)
        )
        if fields:
            message += f" [{fields}]"
        return ValidationFailed(
            message, invalid_fields=invalid, status_code=status, title=title, detail=detail, body=body
        )
    return ApiError(message, status_code=status, title=title, detail=detail, body=body)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _field(body: Any, name: str) -> str | None:
    if isinstance(body, dict) and body.get(name) is not None:
        return str(body[name]).strip()
    return None
