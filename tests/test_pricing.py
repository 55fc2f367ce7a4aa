"""The price table: checked like every setting, and the estimates built on it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from kkiai_pipeline import discovery
from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.config_schema import check_config, check_override_keys
from kkiai_pipeline.dryrun import dry_run
from kkiai_pipeline.errors import ConfigError
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.paths import shipped_dir
from kkiai_pipeline.pipeline import parse_pipeline
from kkiai_pipeline.pricing import (
    Price,
    estimate,
    estimate_total,
    format_cost,
    parse_prices,
    prices_for,
    read_prices,
    unpriced,
)
from kkiai_pipeline.settings import ApiSettings, Settings, check_command_line, load_settings


def refused(raw: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        check_config({"prices": raw})
        parse_prices(raw)
    return str(caught.value)


def test_a_price_is_per_prediction_per_second_of_predict_time_or_both() -> None:
    assert Price(per_prediction=0.003).cost(None) == 0.003
    assert Price(per_second=0.5).cost(4.0) == 2.0
    assert Price(per_second=0.5).cost(None) is None
    assert Price(per_prediction=1.0, per_second=0.5).cost(2.0) == 2.0
    assert Price(per_second=0.5, expected_seconds=3.0).expected() == 1.5
    assert Price(per_second=0.5).expected() is None


def test_the_table_from_the_config_and_the_command_line(tmp_path: Any) -> None:
    override = (
        "prices={black-forest-labs/flux-schnell:{per_prediction:0.003},o/m:{per_second:1,expected_seconds:2}}"
    )
    check_command_line([override])
    discovery.register(discovery.available([shipped_dir("pipelines")]))
    with initialize_config_dir(config_dir=str(shipped_dir("conf")), version_base="1.3"):
        cfg = compose("config", overrides=["pipeline=product_shots", "api=sandbox", override])
    settings = load_settings(cfg, environ={"XDG_CACHE_HOME": str(tmp_path)}, run_dir=tmp_path / "run")
    assert settings.prices == {
        "black-forest-labs/flux-schnell": Price(per_prediction=0.003),
        "o/m": Price(per_second=1.0, expected_seconds=2.0),
    }
    assert parse_prices(None) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"o/m": {"per_predicton": 1}}, "unknown setting 'prices.o/m.per_predicton'"),
        ({"o/m": {"per_second": -1}}, "prices.o/m.per_second must be a number >= 0, not -1"),
        ({"o/m": {"per_second": float("inf")}}, "prices.o/m.per_second must be a finite number >= 0"),
        ({"o/m": {"per_second": "0.1"}}, "prices.o/m.per_second must be a number >= 0, not '0.1'"),
        ({"o/m": {"per_second": 1, "expected_seconds": 0}}, "prices.o/m.expected_seconds must be a"),
        ({"o/m": 0.003}, "prices.o/m must be a group of settings, not 0.003"),
        ({"o/m": {"expected_seconds": 3}}, "prices.o/m needs per_prediction or per_second (or both)"),
        ({"flux-schnell": {"per_prediction": 1}}, "prices.flux-schnell: a price is keyed by the model's"),
        ({"o/m:abc": {"per_prediction": 1}}, "prices.o/m:abc: a price is keyed by the model's owner/name"),
        ([1], "prices must be a group of settings, not a list"),
    ],
)
def test_bad_prices_are_refused_naming_the_entry(raw: Any, message: str) -> None:
    assert refused(raw).startswith(message)


def test_price_keys_on_the_command_line_are_not_taken_for_unknown_settings() -> None:
    check_override_keys(["prices", "prices.o/m"])
    with pytest.raises(ConfigError, match="unknown setting 'price'"):
        check_override_keys(["price"])


def test_dry_run_estimates_from_the_number_of_predictions() -> None:
    prices = {"o/flat": Price(per_prediction=0.003), "o/timed": Price(per_second=0.001, expected_seconds=5)}
    assert estimate(prices, "o/flat", 1000) == 3.0
    assert estimate(prices, "o/timed", 10) == 0.05
    assert estimate(prices, "o/other", 1) is None
    assert estimate(prices, "o/other", 0) == 0.0  # nothing to pay for costs nothing, priced or not
    assert estimate_total(prices, {"o/flat": 2, "o/timed": 10, "o/other": 0}) == 0.056
    assert estimate_total(prices, {"o/flat": 2, "o/other": 1}) is None
    assert estimate_total({}, {"o/flat": 2}) is None
    assert unpriced({"o/t": Price(per_second=1.0)}, {"o/t": 1, "o/x": 0, "o/y": 2}) == ["o/t", "o/y"]
    assert format_cost(0.0564) == "0.0564" and format_cost(None) == "-"


def test_a_run_keeps_its_models_entries_and_reads_back_only_good_ones() -> None:
    table = {"o/a": Price(per_prediction=1.0), "o/b": Price(per_second=2.0)}
    assert prices_for(table, ["o/b", "o/c", "o/b"]) == {"o/b": Price(per_second=2.0)}
    raw = {"o/a": {"per_prediction": 1.0, "expected_seconds": None}, "o/b": {"per_second": -1}, "o/c": 3}
    assert read_prices(raw) == {"o/a": Price(per_prediction=1.0)}
    assert read_prices("nope") == {}


def test_the_dry_run_estimates_what_it_would_pay_for(tmp_path: Any) -> None:
    pipeline = parse_pipeline(
        {
            "name": "priced",
            "steps": {
                "shot": {"model": "stability-ai/sdxl", "input": {"prompt": "a mug"}},
                "cut": {"model": "cjwbw/rembg", "input": {"image": "{{ steps.shot.output[0] }}"}},
                "each": {
                    "model": "cjwbw/rembg",
                    "input": {"image": "{{ item }}"},
                    "foreach": "{{ steps.shot.output }}",
                },
            },
        }
    )
    settings = Settings(
        api=ApiSettings("sandbox", None, "sandbox", ClientOptions()),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path / "run",
        dry_run=True,
        cache_dir=tmp_path / "cache",
        prices={"stability-ai/sdxl": Price(per_second=0.001, expected_seconds=5), "cjwbw/rembg": Price(0.25)},
    )
    text = dry_run(pipeline, settings)
    # "cut" and the foreach's one item (num_outputs 1) are the same rembg prediction: counted once.
    assert "would create up to 2 predictions, 0 reused" in text
    assert (
        "Estimated cost: 0.2550 for 1 stability-ai/sdxl + 1 cjwbw/rembg, at most: foreach items counted "
        "from num_outputs, from the prices in the config." in text.splitlines()
    )
    plan = json.loads((tmp_path / "run" / "plan.json").read_text(encoding="utf-8"))
    assert plan["estimated_cost"] == 0.255
    unpriced_settings = dataclasses.replace(settings, prices={"cjwbw/rembg": Price(0.25)})
    assert (
        "Estimated cost: unknown, at most: foreach items counted from num_outputs: no usable price for stability-ai/sdxl"
        in (dry_run(pipeline, unpriced_settings))
    )
    assert "Estimated cost" not in dry_run(pipeline, dataclasses.replace(settings, prices={}))
