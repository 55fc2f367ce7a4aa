"""A prediction's ``logs``, kept in the run directory: ``steps/<id>/logs.txt`` (an item of a ``foreach``
step: ``steps/<id>/<index>/logs.txt``), named in run.json by the step's ``logs`` and shown in report.html.

The text comes from the service and is not trusted: escape sequences and control characters are
removed (line breaks kept), only the last :data:`MAX_LOG_CHARS` characters are kept (the end of a log
says the most), and the API token's value is masked, as in everything else written.
"""

from __future__ import annotations

import os
from pathlib import Path

from .api.errors import clean_text
from .api.prediction import MAX_LOG_CHARS
from .rundir import RunRecord, leaves
from .secrets import redact

LOGS_FILE = "logs.txt"
TRUNCATED = "[earlier lines cut: only the end of the logs is kept]\n"


def kept_logs(logs: str | None) -> str | None:
    """The text that is written for ``logs``; None when there is nothing to keep."""
    if not logs or not logs.strip():
        return None
    tail = logs[-MAX_LOG_CHARS:]
    text = redact(clean_text(tail, limit=MAX_LOG_CHARS, lines=True))
    return TRUNCATED + text if len(logs) > MAX_LOG_CHARS else text


def save_logs(folder: Path, logs: str | None, *, run_dir: Path) -> str | None:
    """Write ``logs`` to ``folder/logs.txt``; returns its path relative to ``run_dir`` (for run.json),
    or None when there were no logs (then nothing is written)."""
    path = folder / LOGS_FILE
    text = kept_logs(logs)
    if text is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{LOGS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path.relative_to(run_dir).as_posix()


def logs_by_key(previous: RunRecord | None) -> dict[str, str]:
    """The logs files that the run being resumed kept, by prediction key: a result now reused from the
    cache (the ledger keeps no logs) still shows the logs of the prediction this run paid for earlier."""
    if previous is None:
        return {}
    return {
        leaf.key: leaf.logs
        for leaf in leaves(previous.steps)
        if leaf.key and leaf.logs and (previous.run_dir / leaf.logs).is_file()
    }
