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


def test_files_outside_the_pipeline_folder_are_refused(tmp_path: Path) -> None:
    base = tmp_path / "pipelines"
    base.mkdir()
    (tmp_path / "secret.png").write_bytes(b"s")
    (base / "link.png").symlink_to(tmp_path / "secret.png")
    files = LocalFiles(base)
    for name in ("../secret.png", str(tmp_path / "secret.png"), "link.png", "/etc/passwd"):
        with pytest.raises(LocalFileProblem, match="is outside the pipeline's folder"):
            files.data_uri(name)
    allowed = LocalFiles(base, allowed_dirs=(tmp_path,))
    assert allowed.data_uri("link.png") == "data:image/png;base64,cw=="
    assert allowed.data_uri("../secret.png") == "data:image/png;base64,cw=="


def test_the_size_cap_counts_the_bytes_read(tmp_path: Path) -> None:
    files = LocalFiles(Path("/proc/self"), max_bytes=10)
    with pytest.raises(
        LocalFileProblem, match=r"file\('environ'\) is more than 10 bytes, over the 10-byte limit"
    ):
        files.data_uri("environ")
