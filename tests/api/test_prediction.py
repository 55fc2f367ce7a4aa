from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kkiai_pipeline.api.prediction import nodes, output_urls, parse_prediction, parse_timestamp


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


# -- answers that are not to be trusted -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "../../admin", "status": "starting"}, "its prediction id '../../admin' is malformed"),
        ({"id": "a\nb", "status": "starting"}, r"its prediction id 'a\nb' is malformed"),
        ({"id": {"x": 1}, "status": "starting"}, "its prediction id {'x': 1} is malformed"),
        ({"id": True, "status": "starting"}, "its prediction id True is malformed"),
        ({"id": "p", "status": 5}, "its status is no string"),
        ({"id": "p", "status": ""}, "its status is no string"),
        ({"created": 0, "data": [], "id": "../x"}, "its prediction id '../x' is malformed"),
    ],
)
def test_malformed_answers_are_refused(body: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_prediction(body)
    assert str(caught.value) == message


def test_text_fields_are_cleaned_and_odd_fields_ignored() -> None:
    p = parse_prediction(
        {
            "id": 42,
            "status": "failed\x1b[31m",
            "error": "boom\n\x1b]0;title\x07INFO forged",
            "logs": "line 1\r\nline \x1b[2J2\n",
            "metrics": "fast",
            "created_at": "\x1b[2J2024-01-01T00:00:00Z",
        }
    )
    assert (p.id, p.status, p.error, p.logs) == ("42", "failed", "boom INFO forged", "line 1\nline 2\n")
    assert (p.metrics, p.created_at) == ({}, "2024-01-01T00:00:00Z")


@pytest.mark.parametrize("created", [1e308, float("nan"), -1e20, "soon", True])
def test_the_vendor_shape_survives_any_created(created: object) -> None:
    p = parse_prediction({"created": created, "data": [{"url": "https://x/a.png"}, 5, {}]})
    assert (p.status, p.output, p.created_at) == ("succeeded", ["https://x/a.png", 5, None], None)


def test_output_urls_walks_any_depth_without_recursion() -> None:
    deep: object = "https://x/a.png"
    for _ in range(100_000):
        deep = [deep]
    assert output_urls(deep) == ["https://x/a.png"]
    assert [depth for _, depth in nodes([["a"], "b"])] == [1, 2, 3, 2]
