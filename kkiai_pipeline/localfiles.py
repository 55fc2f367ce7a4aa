"""Local files as inputs: the template function ``file("assets/mug.png")`` -> a ``data:`` URI.

Paths are relative to the pipeline file. Replicate recommends data URIs only for small files (under
1 MB), so larger files are refused with a message that says so; the limit is configurable.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 1_000_000


class LocalFileProblem(ValueError):
    """A file named by ``file()`` is missing, unreadable or too large."""


@dataclass(frozen=True)
class LocalFiles:
    """Resolves and encodes the files a pipeline names."""

    base_dir: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    def resolve(self, name: str) -> Path:
        """The file ``name`` relative to the pipeline; raises LocalFileProblem when unusable."""
        path = (self.base_dir / name).resolve()
        if not path.is_file():
            raise LocalFileProblem(f"file('{name}'): no such file {path}")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise LocalFileProblem(
                f"file('{name}') is {size:,} bytes, over the {self.max_bytes:,}-byte limit for data: URIs; "
                "use an http(s) URL for large files, or raise max_file_bytes"
            )
        return path

    def data_uri(self, name: str) -> str:
        """The file ``name`` as a ``data:<mime>;base64,...`` URI."""
        if not isinstance(name, str):
            raise LocalFileProblem(f"file() takes a path string, not {name!r}")
        path = self.resolve(name)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"

    def functions(self) -> dict[str, Callable[[str], str]]:
        """The template functions this provides."""
        return {"file": self.data_uri}
