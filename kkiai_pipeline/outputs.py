"""A finished step's output as it is kept on disk and handed to later steps.

The API's output holds file URLs (a list, a string, or a dict of them) that expire an hour after the
prediction. What is kept (in run.json and the cache) is the same shape with ``data:`` URIs shortened;
what later steps receive is the original shape with each file URL either kept (while fresh) or replaced
by a ``data:`` URI of the stored file, matched by position: the i-th URL is the i-th stored artifact.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .api.prediction import output_urls, parse_timestamp
from .artifacts import Artifact, decode_data_uri, describe_url

#: Replicate deletes API outputs after one hour; reuse a URL only well within that.
URL_LIFETIME = timedelta(minutes=50)


def map_urls(output: Any, replace: Callable[[int, str], str]) -> Any:
    """``output`` with its i-th file URL (in ``output_urls`` order) replaced by ``replace(i, url)``."""
    counter = itertools.count()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return replace(next(counter), value) if _is_url(value) else value
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(output)


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://", "data:"))


def kept_output(output: Any) -> Any:
    """The output as recorded: the same shape, ``data:`` URIs shortened."""
    return map_urls(output, lambda _, url: describe_url(url))


def is_fresh(completed_at: str | None, *, now: datetime | None = None) -> bool:
    """Whether output URLs of a prediction completed at ``completed_at`` can still be fetched."""
    done = parse_timestamp(completed_at)
    if done is None:
        return False
    return (now or datetime.now(timezone.utc)) - done < URL_LIFETIME


def reusable_output(
    output: Any, artifacts: Sequence[Artifact], run_dir: Path, *, completed_at: str | None
) -> Any:
    """The output for later steps: fresh http(s) URLs stay, anything else becomes a ``data:`` URI."""
    fresh = is_fresh(completed_at)

    def replace(index: int, url: str) -> str:
        if fresh and url.lower().startswith(("http://", "https://")):
            return url
        artifact = artifacts[index]
        data = (run_dir / artifact.path).read_bytes()
        return f"data:{artifact.content_type};base64,{base64.b64encode(data).decode('ascii')}"

    return map_urls(output, replace)


def content_keys(value: Any, known: Mapping[str, str]) -> Any:
    """``value`` with every file reference replaced by ``sha256:<hash>`` of its content.

    ``known`` maps URLs of files already stored to their sha256; ``data:`` URIs are hashed directly.
    Two inputs that name the same bytes by different (or expired) URLs get the same form.
    """
    if isinstance(value, str):
        if value in known:
            return f"sha256:{known[value]}"
        if value.startswith("data:"):
            return f"sha256:{hashlib.sha256(decode_data_uri(value)[1]).hexdigest()}"
        return value
    if isinstance(value, list):
        return [content_keys(v, known) for v in value]
    if isinstance(value, Mapping):
        return {k: content_keys(v, known) for k, v in value.items()}
    return value


def known_files(output: Any, artifacts: Sequence[Artifact]) -> dict[str, str]:
    """Each file URL of ``output`` (as handed to later steps) -> the sha256 of the stored file."""
    return {url: artifact.sha256 for url, artifact in zip(output_urls(output), artifacts, strict=False)}
