"""A finished step's output as it is kept on disk and handed to later steps.

The API's output holds file URLs (a list, a string, or a dict of them) that expire an hour after the
prediction. What is kept (in run.json and the cache) is the same shape with ``data:`` URIs shortened;
what later steps receive is the original shape with each file URL either kept (while fresh) or replaced
by a ``data:`` URI of the stored file, matched by position: the i-th URL is the i-th stored artifact.

Before any of that, :func:`as_declared` checks an output from the API and puts it in its model's
declared kind: one URL for a single-file model (the vendor page's ``{"data": [{"url": ...}]}`` answer
is a list of one), a list for a list model.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .api.errors import clean_text
from .api.prediction import nodes, output_urls, parse_timestamp
from .artifacts import Artifact, decode_data_uri, describe_url
from .catalog import OutputKind
from .errors import ApiError, DownloadError

#: Replicate deletes API outputs after one hour; reuse a URL only well within that.
URL_LIFETIME = timedelta(minutes=50)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,30}):")


def as_declared(output: Any, kind: OutputKind | None, *, max_depth: int, max_files: int) -> Any:
    """A succeeded prediction's ``output``, checked, in the model's declared ``kind``.

    Every value in it must be an http(s) or ``data:`` URL; it may nest at most ``max_depth`` deep
    and hold at most ``max_files`` files. Raises ApiError for an output that breaks these rules, and
    DownloadError for one that holds no file at all (its files may have been removed).
    """
    if output is None or (isinstance(output, list | Mapping) and not output):
        raise DownloadError("the prediction succeeded, but its output holds no file", url="")
    files = 0
    for value, depth in nodes(output):
        if depth > max_depth:
            raise _unusable(f"nests deeper than {max_depth} levels (api.max_output_depth)")
        if isinstance(value, list | Mapping):
            continue
        files += 1
        if not (isinstance(value, str) and _is_url(value)):
            raise _unusable(f"holds {_leaf(value)} as its file {files}")
        if files > max_files:
            raise _unusable(f"holds more than {max_files} files (api.max_output_files)")
    if files == 0:  # only empty lists and dicts in each other
        raise DownloadError("the prediction succeeded, but its output holds no file", url="")
    return _in_kind(output, kind, files)


def _in_kind(output: Any, kind: OutputKind | None, files: int) -> Any:
    if kind == "list" and isinstance(output, str):
        return [output]
    if kind == "single" and not isinstance(output, str):
        if isinstance(output, list) and len(output) == 1 and isinstance(output[0], str):
            return output[0]
        raise _unusable(f"holds {files} files, but the model gives one")
    return output


def _leaf(value: Any) -> str:
    """What an output value that is not a usable URL is, for a message."""
    if not isinstance(value, str):
        return "null" if value is None else f"a {type(value).__name__}"
    scheme = _SCHEME.match(value)
    if scheme is not None:
        name = clean_text(scheme.group(1), limit=30)
        return f"a '{name}:' URL (only http(s) and data: outputs can be fetched)"
    return f"'{clean_text(value, limit=60)}' (not a URL)"


def _unusable(what: str) -> ApiError:
    return ApiError(f"the prediction's output {what}; nothing was downloaded", status_code=0)


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
