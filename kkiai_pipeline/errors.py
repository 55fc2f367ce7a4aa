"""The whole exception tree of kkiai-pipeline.

::

    KkiaiError                       root; ``exit_code`` says how the CLI ends
    ├── UsageError                   bad input found before any paid call (exit 2)
    │   ├── ConfigError              settings: missing token, bad option values
    │   ├── PipelineError            one or more problems in a pipeline file (collected)
    │   ├── StepInputError           a step's rendered input is invalid (checked before its create)
    │   ├── UnknownModelError        a model reference the catalog does not know
    │   ├── RunDirInUse              another live run holds the run (or sweep) directory's lock
    │   └── BudgetExceeded           a run or sweep would create more than ``max_predictions``
    ├── ApiError                     the API answered with an error (problem+json)
    │   └── ValidationFailed         422 with ``invalid_fields``
    ├── TransportError               the API could not be reached (connection, timeout)
    │   └── AmbiguousCreateError     a create failed after it may have been received: a prediction
    │                                may exist and be billed; it is not retried unless opted in
    ├── DeadlineExceeded             ``wait()`` reached its deadline; carries the last prediction
    │                                (the caller cancels it)
    ├── PredictionFailed             a prediction ended failed / canceled / aborted
    ├── UnresolvedCreate             a create's answer was lost and its absence cannot be proven: the
    │                                step is left ``unresolved``, and nothing is sent again for it
    ├── OutputsExpired               a prediction succeeded but the service deleted its files before
    │                                they were stored (paid again only with ``repay_expired=true``)
    ├── DownloadError                an output file could not be fetched or stored
    └── StateError                   a record was asked for an impossible status change (a bug)

Library exceptions (httpx, jinja2, yaml) are translated at one boundary each and chained with
``from exc``. Messages never contain the API token: ``str()`` of any of these errors masks its value
(:func:`kkiai_pipeline.secrets.redact`), whatever an API answer or a setting put into the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .secrets import redact

if TYPE_CHECKING:
    from .api.prediction import Prediction


class KkiaiError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:
        # Every printed, logged or recorded message goes through here: the token's value never does.
        return redact(super().__str__())


class UsageError(KkiaiError):
    """The user's input is wrong; nothing has been spent."""

    exit_code = 2


class ConfigError(UsageError):
    """A setting is missing or invalid (e.g. no API token)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline, located as precisely as we know it."""

    message: str
    file: Path | None = None
    step: str | None = None
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        if self.step is not None:
            where.append(f"step '{self.step}'")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class PipelineError(UsageError):
    """All the problems found in a pipeline, reported together."""

    def __init__(self, problems: Iterable[Problem], *, pipeline: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.pipeline = pipeline
        head = f"pipeline '{pipeline}'" if pipeline else "pipeline"
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{head}: {count} {noun}, nothing was sent to the API:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class StepInputError(UsageError):
    """A step's input, once its templates were rendered, failed validation; nothing was sent for it."""


class UnknownModelError(UsageError):
    """A model reference that matches none of the supported models."""

    def __init__(
        self, ref: str, *, known: Sequence[str], suggestion: str | None = None, note: str = ""
    ) -> None:
        self.ref = ref
        self.known = tuple(known)
        self.suggestion = suggestion
        hint = f" Did you mean '{suggestion}'?" if suggestion else ""
        after = f" ({note})" if note else ""
        super().__init__(f"unknown model '{ref}'.{hint} Known models: {', '.join(self.known)}{after}")


class BudgetExceeded(UsageError):
    """A run or sweep would create more predictions than ``max_predictions`` allows; nothing was sent."""

    def __init__(self, message: str, *, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__(message)


class RunDirInUse(UsageError):
    """Another process holds the lock of the run (or sweep) directory; ``pid`` if it said which."""

    def __init__(self, run_dir: Path, *, pid: int | None) -> None:
        self.run_dir = run_dir
        self.pid = pid
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"{run_dir} is in use by another run{holder}")


class ApiError(KkiaiError):
    """The API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        title: str | None = None,
        detail: str | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.title = title
        self.detail = detail
        self.body = body
        super().__init__(message)


class ValidationFailed(ApiError):
    """The API rejected the input (422); ``invalid_fields`` lists what it disliked."""

    def __init__(self, message: str, *, invalid_fields: Sequence[dict[str, Any]], **kwargs: Any) -> None:
        self.invalid_fields = tuple(invalid_fields)
        super().__init__(message, **kwargs)


class TransportError(KkiaiError):
    """The API could not be reached or did not answer in time."""


class AmbiguousCreateError(TransportError):
    """A create failed after the request may have reached the server; a prediction may exist.

    ``reason`` says what failed (an exception name, or the status answered); ``status_code`` is set when
    the server answered (a 5xx). ``attempts`` > 1 when the user let such creates be retried
    (``api.retry_ambiguous_creates``) and the retries gave up too: the cause is the last failure.
    """

    def __init__(
        self, *, method: str, path: str, reason: str, status_code: int | None = None, attempts: int = 1
    ) -> None:
        self.method = method
        self.path = path
        self.reason = reason
        self.status_code = status_code
        self.attempts = attempts
        if attempts == 1:
            told = (
                "a prediction may have been created and may be billed. It was not retried, so as not to pay "
                "twice: check the account's predictions list before running this step again (or set "
                "api.retry_ambiguous_creates=true to retry such failures)"
            )
        else:
            told = (
                f"predictions may have been created and may be billed; then {attempts} attempts in all "
                "failed. Check the account's predictions list before running this step again"
            )
        super().__init__(f"{method} {path} failed after the request was sent ({reason}): {told}")


class DeadlineExceeded(KkiaiError):
    """A prediction was not finished by its deadline; ``prediction`` is the last state seen.

    The prediction is still running (and billing): whoever raised the deadline cancels it.
    """

    def __init__(self, message: str, *, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__(message)


class PredictionFailed(KkiaiError):
    """A prediction reached a terminal state other than ``succeeded``; ``logs`` are its logs, if any."""

    def __init__(
        self, message: str, *, prediction_id: str | None, status: str, logs: str | None = None
    ) -> None:
        self.prediction_id = prediction_id
        self.status = status
        self.logs = logs
        super().__init__(message)


class UnresolvedCreate(KkiaiError):
    """A create may have reached the service, and the service cannot yet tell whether it did.

    ``key`` is the ledger key, ``window`` the server-clock time range (RFC 3339) in which the
    prediction would have been created; later runs keep looking for it instead of sending it again.
    """

    def __init__(self, message: str, *, key: str, window: tuple[str, str]) -> None:
        self.key = key
        self.window = window
        super().__init__(message)


class OutputsExpired(KkiaiError):
    """A prediction succeeded, but its files were deleted by the service before they were stored."""

    def __init__(self, message: str, *, prediction_id: str | None) -> None:
        self.prediction_id = prediction_id
        super().__init__(message)


class StateError(KkiaiError):
    """A status change the record's lifecycle does not allow: a bug, never the user's input."""


class DownloadError(KkiaiError):
    """An output file could not be downloaded or stored."""

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)
