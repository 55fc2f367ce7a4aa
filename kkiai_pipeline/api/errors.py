"""Failed requests -> our error tree: error answers (problem+json, or anything else an edge proxy sends)
become ApiError, httpx transport exceptions become TransportError or AmbiguousCreateError.

An answer may echo the request, ``Authorization`` header included: whatever is taken from it (title,
detail, body, the fields of a 422) is redacted (:func:`kkiai_pipeline.secrets.redact`) before it is
kept or shown.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import AmbiguousCreateError, ApiError, TransportError, ValidationFailed
from ..secrets import redact, redact_data

_HINTS = {
    401: "check KKIAI_API_TOKEN",
    402: "add credit to the account",
    404: "the prediction or model does not exist",
}

# Broken after the request went out (timeouts aside): the server was reached, so "cannot reach" would lie.
_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.RemoteProtocolError)


def error_from_response(response: httpx.Response, *, attempts: int = 1) -> ApiError:
    """A clear ApiError for an error response; ``ValidationFailed`` for 422 with ``invalid_fields``."""
    body = redact_data(json_or_none(response))
    title = _field(body, "title")
    detail = _field(body, "detail")
    status = response.status_code
    summary = ": ".join(p for p in (title, detail) if p) or redact(response.reason_phrase) or "error"
    message = f"the API answered {status} to {_what(response.request)}: {summary}"
    if status in _HINTS:
        message += f" ({_HINTS[status]})"
    message += _gave_up(attempts)
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


def error_from_exception(exc: httpx.TransportError, *, base_url: str, attempts: int = 1) -> TransportError:
    """A TransportError naming the request that could not be completed (never the token)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        message = f"{_what(exc.request, full=True)} timed out: {name}"
    elif isinstance(exc, _BROKEN):
        message = f"{_what(exc.request, full=True)} failed: the connection broke ({name}: {exc})"
    else:
        message = f"cannot reach {base_url}: {exc or name}"
    return TransportError(redact(message + _gave_up(attempts)))


def ambiguous_create(
    request: httpx.Request, *, reason: str, status_code: int | None = None, attempts: int = 1
) -> AmbiguousCreateError:
    """The error for a create that may have been received (see ``retries.Verdict.AMBIGUOUS``)."""
    return AmbiguousCreateError(
        method=request.method,
        path=request.url.path,
        reason=reason,
        status_code=status_code,
        attempts=attempts,
    )


def response_reason(response: httpx.Response) -> str:
    """What an error answer was, in a few words: ``the API answered 502 Bad Gateway``."""
    return redact(f"the API answered {response.status_code} {response.reason_phrase}".rstrip())


def json_or_none(response: httpx.Response) -> Any:
    """The response's JSON body, or None when it has none (an HTML page from an edge proxy)."""
    try:
        return response.json()
    except ValueError:
        return None


def _what(request: httpx.Request, *, full: bool = False) -> str:
    return redact(f"{request.method} {request.url if full else request.url.path}")


def _gave_up(attempts: int) -> str:
    return f" (gave up after {attempts} attempts)" if attempts > 1 else ""


def _field(body: Any, name: str) -> str | None:
    if isinstance(body, dict) and body.get(name) is not None:
        return str(body[name]).strip()
    return None
