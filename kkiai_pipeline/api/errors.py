"""Failed requests -> our error tree: error answers (problem+json, or anything else an edge proxy sends)
become ApiError, httpx transport exceptions become TransportError or AmbiguousCreateError.

An answer may echo the request, ``Authorization`` header included: whatever is taken from it (title,
detail, body, the fields of a 422) is redacted (:func:`kkiai_pipeline.secrets.redact`) before it is
kept or shown. Text the API sends (an error's title and detail, a prediction's error and logs, a
reason phrase) is untrusted: :func:`clean_text` strips terminal escapes and control characters from
it before it can reach a message, a log line or the terminal, where it could recolour, retitle or
forge lines.
"""

from __future__ import annotations

import re
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

MAX_TEXT = 2000  # characters of one piece of API text kept in a message
# ANSI escape sequences whole (CSI, OSC up to its terminator, and two-character ESC sequences), so no
# half of one is left to be read as text.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?|\x9b[0-?]*[ -/]*[@-~]?"  # CSI, 7- and 8-bit
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (window titles, hyperlinks)
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|\x1b.?",
    re.DOTALL,
)
# C0 and C1 controls, DEL, and the invisible characters that reorder or split text (bidi overrides,
# line and paragraph separators).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINE_CONTROLS = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def clean_text(text: str, *, limit: int = MAX_TEXT, lines: bool = False) -> str:
    """``text`` from the API, safe to print or log: escape sequences removed, control characters
    replaced by spaces (``lines`` keeps line breaks, for logs), at most ``limit`` characters."""
    text = _ESCAPES.sub("", text[: limit * 4])  # bounded work, whatever the API sent
    text = _LINE_CONTROLS.sub(" ", text.replace("\r\n", "\n")) if lines else _CONTROLS.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_from_response(response: httpx.Response, *, attempts: int = 1) -> ApiError:
    """A clear ApiError for an error response; ``ValidationFailed`` for 422 with ``invalid_fields``."""
    body = redact_data(json_or_none(response))
    title = _field(body, "title")
    detail = _field(body, "detail")
    status = response.status_code
    summary = ": ".join(p for p in (title, detail) if p) or redact(_reason_phrase(response)) or "error"
    message = f"the API answered {status} to {_what(response.request)}: {summary}"
    if status in _HINTS:
        message += f" ({_HINTS[status]})"
    message += _gave_up(attempts)
    invalid = body.get("invalid_fields") if isinstance(body, dict) else None
    if status == 422 and isinstance(invalid, list):
        fields = clean_text(
            "; ".join(
                f"{f.get('field')}: {f.get('description')}" for f in invalid[:50] if isinstance(f, dict)
            )
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
    said = clean_text(str(exc))  # a protocol error may quote what the server sent
    if isinstance(exc, httpx.TimeoutException):
        message = f"{_what(exc.request, full=True)} timed out: {name}"
    elif isinstance(exc, _BROKEN):
        message = f"{_what(exc.request, full=True)} failed: the connection broke ({name}: {said})"
    else:
        message = f"cannot reach {base_url}: {said or name}"
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
    return redact(f"the API answered {response.status_code} {_reason_phrase(response)}".rstrip())


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
        return clean_text(str(body[name])).strip()
    return None


def _reason_phrase(response: httpx.Response) -> str:
    return clean_text(response.reason_phrase, limit=80)
