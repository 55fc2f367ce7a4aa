from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.catalog import OutputKind
from kkiai_pipeline.errors import ApiError, DownloadError
from kkiai_pipeline.outputs import (
    as_declared,
    content_keys,
    is_fresh,
    kept_output,
    map_urls,
    reusable_output,
)


def stamp(ago: timedelta) -> str:
    return (datetime.now(timezone.utc) - ago).isoformat().replace("+00:00", "Z")


def test_map_urls_numbers_urls_in_output_order() -> None:
    output = {"a": ["https://x/0.png", "not a url"], "b": "data:image/png;base64,AA=="}
    assert map_urls(output, lambda i, url: f"#{i}") == {"a": ["#0", "not a url"], "b": "#1"}


def test_kept_output_shortens_data_uris() -> None:
    uri = "data:image/png;base64," + "A" * 100
    assert kept_output(["https://x/0.png", uri]) == [
        "https://x/0.png",
        f"data:image/png;base64,… ({len(uri)} chars)",
    ]


def test_freshness() -> None:
    assert is_fresh(stamp(timedelta(minutes=5)))
    assert not is_fresh(stamp(timedelta(minutes=55)))
    assert not is_fresh(None)


def test_reusable_output_keeps_fresh_urls_and_embeds_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"first")
    (tmp_path / "b.png").write_bytes(b"second")
    artifacts = [
        Artifact("a.png", "https://x/0.png", hashlib.sha256(b"first").hexdigest(), 5, "image/png"),
        Artifact("b.png", "data:…", hashlib.sha256(b"second").hexdigest(), 6, "image/png"),
    ]
    output = ["https://x/0.png", "data:image/png;base64,… (30 chars)"]
    fresh = reusable_output(output, artifacts, tmp_path, completed_at=stamp(timedelta(minutes=1)))
    assert fresh == ["https://x/0.png", "data:image/png;base64," + base64.b64encode(b"second").decode()]
    stale = reusable_output(output, artifacts, tmp_path, completed_at=stamp(timedelta(hours=3)))
    assert stale[0] == "data:image/png;base64," + base64.b64encode(b"first").decode()


def test_content_keys_name_files_by_their_bytes() -> None:
    digest = hashlib.sha256(b"pixels").hexdigest()
    by_url = content_keys({"image": "https://x/expired.png", "n": 2}, {"https://x/expired.png": digest})
    by_data = content_keys(
        {"image": "data:image/png;base64," + base64.b64encode(b"pixels").decode(), "n": 2}, {}
    )
    assert by_url == by_data == {"image": f"sha256:{digest}", "n": 2}
    assert content_keys(["https://other/unknown.png"], {}) == ["https://other/unknown.png"]


# -- outputs as their models declare them -----------------------------------------------------------

U = "https://x/0.png"


def declared(output: object, kind: OutputKind | None = "list", **caps: int) -> object:
    return as_declared(output, kind, **{"max_depth": 4, "max_files": 3, **caps})


def test_outputs_take_their_models_declared_kind() -> None:
    assert declared([U], "single") == U  # the vendor page's {"data": [{"url": ...}]} answer
    assert declared(U, "single") == U
    assert declared(U, "list") == [U]
    assert declared([U, U], "list") == [U, U]
    assert declared({"a": U}, None) == {"a": U}


@pytest.mark.parametrize(
    ("output", "kind", "message"),
    [
        ([U, U], "single", "holds 2 files, but the model gives one"),
        (
            ["file:///etc/passwd"],
            "list",
            "holds a 'file:' URL (only http(s) and data: outputs can be fetched) as its file 1",
        ),
        (
            [U, "ftp://x/y"],
            "list",
            "holds a 'ftp:' URL (only http(s) and data: outputs can be fetched) as its file 2",
        ),
        (
            ["javascript:alert(1)"],
            "list",
            "holds a 'javascript:' URL (only http(s) and data: outputs can be fetched) as its file 1",
        ),
        (["hello\x1b[2J"], "list", "holds 'hello' (not a URL) as its file 1"),
        ([U, 5], "list", "holds a int as its file 2"),
        ([U, None], "list", "holds null as its file 2"),
        ([[[[[U]]]]], "list", "nests deeper than 4 levels (api.max_output_depth)"),
        ([U] * 4, "list", "holds more than 3 files (api.max_output_files)"),
    ],
)
def test_unusable_outputs_fail_clearly(output: object, kind: OutputKind, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        declared(output, kind)
    assert str(caught.value) == f"the prediction's output {message}; nothing was downloaded"


@pytest.mark.parametrize("output", [None, [], {}, [[], {}]])
def test_an_output_without_files_is_a_download_error(output: object) -> None:
    with pytest.raises(DownloadError, match=r"^the prediction succeeded, but its output holds no file$"):
        declared(output)


def test_a_deep_output_is_refused_without_recursion() -> None:
    deep: object = U
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(ApiError, match="nests deeper than 4 levels"):
        declared(deep)
