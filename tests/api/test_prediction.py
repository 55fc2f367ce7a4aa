from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kkiai_pipeline.api.prediction import output_urls, parse_prediction, parse_timestamp


@pytest.mark.parametrize(
    ("output", "urls"),
    [
        (["https://a/0.png", "https://a/1.png"], ["https://a/0.png", "https://a/1.png"]),
        ("https://a/0.png", ["https://a/0.png"]),
        ("data:image/png;base64,AAAA", ["data:image/png;base64,AAAA"]),
        (
            {"image": "http://127.0.0.1:1/f/x.png", "mask": ["https://a/m.png"]},
            ["http://127.0.0.1:1/f/x.png", "https://a/m.png"],
        ),
        (None, []),
        (["not a url", 3], []),
    ],
)
def test_output_urls_accepts_every_shape(output: object, urls: list[str]) -> None:
    assert output_urls(output) == urls


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-10-04T18:07:37.245Z", datetime(2024, 10, 4, 18, 7, 37, 245000, tzinfo=timezone.utc)),
        ("2023-11-16T11:46:16.064900134Z", datetime(2023, 11, 16, 11, 46, 16, 64900, tzinfo=timezone.utc)),
        ("2023-08-16T18:57:08Z", datetime(2023, 8, 16, 18, 57, 8, tzinfo=timezone.utc)),
        ("garbage", None),
        (None, None),
    ],
)
def test_timestamps_are_parsed_leniently(text: str | None, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_a_body_without_status_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'status'"):
        parse_prediction({"id": "x"})


def test_aborted_is_terminal() -> None:
    assert parse_prediction({"id": "x", "status": "aborted"}).terminal
