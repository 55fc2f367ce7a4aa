"""What the sandbox remembers of a prediction: the facts its lifecycle is derived from.

Every time is a Unix time (seconds since the epoch), because several sandbox processes, one after the
other or at once, read the same records from the persistent store (``database``) and must agree on
what a moment means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..catalog import ModelSpec


@dataclass(frozen=True)
class FileRef:
    """An output file by name and media type; its bytes stay in the store until asked for."""

    name: str
    media_type: str


@dataclass(frozen=True)
class Outcome:
    """What drawing the files came to: the files, or why there are none, and when it finished."""

    finished: float
    error: str | None
    files: tuple[FileRef, ...]


@dataclass(frozen=True)
class Prediction:
    """One prediction as the store records it.

    ``planned_error`` fails it at ``due`` (after processing), or at ``started`` without ever processing
    when ``fails_starting``. ``deadline`` comes from ``Cancel-After``; once it passes (or cancel is
    called), ``canceled_at`` holds the moment and ``aborted`` says whether it had not started by then.
    ``outcome`` is None until its files are drawn; ``owner`` names the sandbox process drawing them.
    """

    id: str
    model: ModelSpec
    input: dict[str, Any]
    seed: int
    steps: int
    created: float
    started: float
    due: float
    owner: str
    planned_error: str | None = None
    fails_starting: bool = False
    deadline: float | None = None
    canceled_at: float | None = None
    aborted: bool = False
    outcome: Outcome | None = None
