from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.outputs import content_keys, is_fresh, kept_output, map_urls, reusable_output


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
