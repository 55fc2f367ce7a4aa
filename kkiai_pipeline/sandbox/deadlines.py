"""``Cancel-After``: the create header that gives a prediction a deadline.

The value is a duration measured from creation: ``30s``, ``5m``, ``1h30m45s`` (units h, m, s in that
order, each optional, decimals allowed), or a bare number of seconds. The API's minimum is 5 s; what
it does with less is not documented, so the sandbox raises shorter durations to the minimum (tests
lower the minimum with ``SandboxConfig.min_cancel_after_seconds``). A value it cannot read is refused
with 400, so that a client's typo does not silently lose its deadline.
"""

from __future__ import annotations

import re

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?")
_SECONDS = re.compile(_NUMBER)


class CancelAfterError(ValueError):
    """A ``Cancel-After`` value that is not a duration."""


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``5m``, ``1h30m45s`` or ``90``; raises CancelAfterError otherwise."""
    value = text.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    match = _DURATION.fullmatch(value)
    if not value or match is None:
        raise CancelAfterError(
            "Cancel-After must be a duration such as 30s, 5m or 1h30m45s, or a number of seconds;"
            f" got {text!r}"
        )
    hours, minutes, seconds = (float(match[unit] or 0) for unit in "hms")
    return hours * 3600 + minutes * 60 + seconds


def cancel_after(header: str | None, *, minimum: float) -> float | None:
    """The deadline, in seconds from creation, that a ``Cancel-After`` header asks for (None if absent)."""
    if header is None:
        return None
    return max(parse_duration(header), minimum)
