"""What the sandbox does with a create request's ``input`` before a stand-in model sees it.

- ``check_input``: schema validation (the client's own ``validate_input``), answered with 422 and
  ``invalid_fields``, so a request that slipped past the client gets the API's real error shape.
- ``find_marker``: the failure-injection marker, anywhere in a string value.
- ``resolve_files``: turns file inputs into bytes. ``data:`` URIs are decoded; URLs of this sandbox's
  own ``/files/{prediction_id}/{name}`` are looked up in the store, whatever their host. The sandbox
  never makes an outbound request, so any other URL is an error.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from ..catalog import ModelSpec
from ..validation import to_invalid_fields, validate_input
from .models import OutputFile

FileLookup = Callable[[str, str], OutputFile | None]

_OWN_FILE_PATH = re.compile(r"/files/(?P<prediction>[a-z0-9]+)/(?P<name>[^/]+)$")


class InputFileError(ValueError):
    """A file input the sandbox cannot use; the prediction fails with this message."""


def check_input(model: ModelSpec, input: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The input's problems as ``invalid_fields`` entries (``type``, ``field``, ``description``).

    The one place where create requests are validated against the model's schema; a non-empty list
    makes create answer 422 "Input validation failed".
    """
    return to_invalid_fields(validate_input(model, input))


def validation_detail(invalid_fields: list[dict[str, Any]]) -> str:
    """The ``detail`` text of a 422 "Input validation failed" problem."""
    return "".join(
        f"- {item.get('field', 'input')}: {item.get('description', '')}\n" for item in invalid_fields
    )


def find_marker(value: Any, marker: str) -> bool:
    """Whether ``marker`` occurs in any string inside ``value`` (dicts and lists are searched)."""
    if isinstance(value, str):
        return marker in value
    if isinstance(value, Mapping):
        return any(find_marker(item, marker) for item in value.values())
    if isinstance(value, list | tuple):
        return any(find_marker(item, marker) for item in value)
    return False


def resolve_files(model: ModelSpec, input: Mapping[str, Any], lookup: FileLookup) -> dict[str, bytes]:
    """The contents of the model's file inputs present in ``input``; raises InputFileError."""
    files = {}
    for name, spec in model.inputs.items():
        value = input.get(name)
        if spec.is_file and isinstance(value, str) and value:
            files[name] = _read(name, value, lookup)
    return files


def _read(name: str, value: str, lookup: FileLookup) -> bytes:
    if value.startswith("data:"):
        return decode_data_uri(name, value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise InputFileError(f"input '{name}' is neither a URL nor a data: URI")
    match = _OWN_FILE_PATH.search(parts.path)
    if match is None:
        raise InputFileError(
            f"input '{name}' is {value!r}: the sandbox does not fetch external URLs; "
            "pass a data: URI or the URL of one of this sandbox's output files (/files/...)"
        )
    found = lookup(match["prediction"], unquote(match["name"]))
    if found is None:
        raise InputFileError(f"input '{name}' is {value!r}, which is not an output file of this sandbox")
    return found.content


def decode_data_uri(name: str, value: str) -> bytes:
    """The bytes of a ``data:[<mime>][;base64],<data>`` URI."""
    header, comma, payload = value.partition(",")
    if not comma:
        raise InputFileError(f"input '{name}' is a malformed data: URI (no comma)")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InputFileError(f"input '{name}' is a data: URI with invalid base64 ({exc})") from exc
    return unquote_to_bytes(payload)
