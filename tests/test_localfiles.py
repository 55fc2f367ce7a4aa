from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kkiai_pipeline.localfiles import LocalFileProblem, LocalFiles
from kkiai_pipeline.templating import Templates


def test_file_becomes_a_data_uri_relative_to_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "mug.png").write_bytes(b"\x89PNG-bytes")
    templates = Templates(LocalFiles(tmp_path).functions())
    value = templates.parse('{{ file("assets/mug.png") }}').render({"params": {}, "steps": {}})
    assert value == "data:image/png;base64," + base64.b64encode(b"\x89PNG-bytes").decode()


def test_unknown_types_are_octet_streams(tmp_path: Path) -> None:
    (tmp_path / "blob.weird").write_bytes(b"x")
    assert LocalFiles(tmp_path).data_uri("blob.weird") == "data:application/octet-stream;base64,eA=="


def test_missing_and_too_large_files(tmp_path: Path) -> None:
    files = LocalFiles(tmp_path, max_bytes=10)
    with pytest.raises(LocalFileProblem, match=r"file\('nope.png'\): no such file"):
        files.data_uri("nope.png")
    (tmp_path / "big.png").write_bytes(b"x" * 11)
    with pytest.raises(LocalFileProblem, match="is 11 bytes, over the 10-byte limit for data: URIs"):
        files.data_uri("big.png")
    (tmp_path / "ok.png").write_bytes(b"x" * 10)
    assert files.data_uri("ok.png").startswith("data:image/png;base64,")


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(LocalFileProblem, match=r"dir is not a regular file$"):
        LocalFiles(tmp_path).data_uri("dir")
