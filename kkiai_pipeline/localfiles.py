"""Local files as inputs: the template function ``file("assets/mug.png")`` -> a ``data:`` URI.

Paths are relative to the pipeline file. Only regular files under the pipeline file's folder, or under a
directory the user allows (the setting ``allowed_dirs``), are read: a pipeline file from elsewhere must not
be able to send ``~/.ssh/id_rsa`` or ``/proc/self/environ`` to the API. Symlinks are resolved before the
check. Replicate recommends data URIs only for small files (under 1 MB), so larger files are refused with a
message that says so; the limit (configurable) applies to the bytes actually read, since procfs and
similar files report a size of 0. The files of rows that ``lines()``, ``csv()`` and ``jsonl()`` read
(:mod:`.rowfiles`) are confined by the same rules, with their own size limit.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rowfiles import RowFiles

DEFAULT_MAX_BYTES = 1_000_000


class LocalFileProblem(ValueError):
    """A file named by ``file()`` is missing, unreadable, outside the allowed folders or too large."""


@dataclass(frozen=True)
class LocalFiles:
    """Resolves, confines and encodes the files a pipeline names."""

    base_dir: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_dirs: tuple[Path, ...] = ()  # besides base_dir

    def resolve(self, name: str, *, function: str = "file") -> Path:
        """The file ``name`` relative to the pipeline; raises LocalFileProblem when unusable."""
        shown = f"{function}('{_shown(name)}')"
        try:
            path = (self.base_dir / name).resolve()
            roots = [Path(d).resolve() for d in (self.base_dir, *self.allowed_dirs)]
        except (OSError, RuntimeError, ValueError) as exc:  # NUL bytes, symlink loops, names too long
            raise LocalFileProblem(f"{shown}: not a usable path ({_reason(exc)})") from exc
        if not any(path.is_relative_to(root) for root in roots):
            raise LocalFileProblem(
                f"{shown}: {path} is outside the pipeline's folder {roots[0]}; "
                "add its directory to allowed_dirs to use it"
            )
        try:
            mode = path.stat().st_mode
        except (OSError, ValueError) as exc:
            raise LocalFileProblem(f"{shown}: no such file {path}") from exc
        if not stat.S_ISREG(mode):
            raise LocalFileProblem(f"{shown}: {path} is not a regular file")
        return path

    def read(self, name: str) -> tuple[Path, bytes]:
        """The path and bytes of ``name``, at most ``max_bytes`` of them; raises LocalFileProblem."""
        path, data = self._read(name, "file", self.max_bytes)
        if len(data) > self.max_bytes:
            size = _size(path)  # what stat says, when it says more than was read (not on procfs)
            over = f"{size:,} bytes" if size >= len(data) else f"more than {self.max_bytes:,} bytes"
            raise LocalFileProblem(
                f"file('{_shown(name)}') is {over}, over the {self.max_bytes:,}-byte limit for data: URIs; "
                "use an http(s) URL for large files, or raise max_file_bytes"
            )
        return path, data

    def read_confined(self, name: str, function: str, limit: int) -> bytes:
        """The bytes of ``name`` for the template function ``function``: the same folders as ``file()``,
        at most ``limit`` bytes; raises LocalFileProblem."""
        _, data = self._read(name, function, limit)
        if len(data) > limit:
            raise LocalFileProblem(f"{function}('{_shown(name)}') is over the limit of {limit:,} bytes")
        return data

    def _read(self, name: str, function: str, limit: int) -> tuple[Path, bytes]:
        """The path and at most ``limit`` + 1 bytes of ``name``."""
        shown = f"{function}('{_shown(name)}')"
        path = self.resolve(name, function=function)
        try:
            # O_NONBLOCK: a file swapped for a FIFO after the check must not hang the run.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise LocalFileProblem(f"{shown}: {path} is not a regular file")
                data = handle.read(limit + 1)
        except OSError as exc:
            raise LocalFileProblem(f"{shown}: cannot read {path}: {_reason(exc)}") from exc
        return path, data

    def data_uri(self, name: str) -> str:
        """The file ``name`` as a ``data:<mime>;base64,...`` URI."""
        if not isinstance(name, str):
            raise LocalFileProblem(f"file() takes a path string, not {_shown(repr(name))}")
        path, data = self.read(name)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    def functions(self) -> dict[str, Callable[[str], Any]]:
        """The template functions this provides: ``file()``, and ``lines()``, ``csv()`` and ``jsonl()``
        (see :mod:`.rowfiles`), each file of rows read once for the run."""
        return {"file": self.data_uri, **RowFiles(self.read_confined).functions()}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _reason(exc: Exception) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


def _shown(name: str, limit: int = 80) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."
