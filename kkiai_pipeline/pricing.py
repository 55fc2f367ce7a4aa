"""Estimated cost: an optional price table, per model, in the config (``prices``).

::

    prices:
      black-forest-labs/flux-schnell: {per_prediction: 0.003}
      stability-ai/sdxl: {per_second: 0.000725, expected_seconds: 4}

A model (``owner/name``, any version) costs ``per_prediction`` for each prediction a run pays for, plus
``per_second`` for each second of the prediction's ``predict_time`` (the compute time the service bills,
from the prediction's metrics). The numbers are in whatever currency the table is written in: nothing
here knows the service's real prices, so every figure is an *estimate* and is labelled so.

Only predictions a run paid for cost something (``created``, ``reattached``, ``recovered``: see
:data:`kkiai_pipeline.rundir.PAID`); a result reused from the cache or shared with another step costs
nothing again.

A dry run cannot know the ``predict_time`` of predictions not yet made. A per-second price is estimated
there from the entry's ``expected_seconds`` (the time one prediction of that model usually takes, as the
user knows it from the model's page or earlier runs); without it the dry run says the cost is unknown
rather than guessing a duration, since a guess would turn into a wrong amount of money.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

MODEL_FORM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
PRICE_KEYS = ("per_prediction", "per_second", "expected_seconds")
EXAMPLE = "; e.g. 'prices={black-forest-labs/flux-schnell:{per_prediction:0.003}}'"


@dataclass(frozen=True)
class Price:
    """What one prediction of a model costs: a fixed part and a part per second of ``predict_time``."""

    per_prediction: float = 0.0
    per_second: float = 0.0
    expected_seconds: float | None = None  # a dry run's guess of predict_time, for a per-second price

    def __post_init__(self) -> None:  # floats, whatever was passed: run.json reads them back as such
        for name in ("per_prediction", "per_second", "expected_seconds"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    def cost(self, predict_time: float | None) -> float | None:
        """The cost of one paid prediction that ran ``predict_time`` seconds; None when the price is
        per second and the time is unknown."""
        if not self.per_second:
            return self.per_prediction
        if predict_time is None:
            return None
        return self.per_prediction + self.per_second * predict_time

    def expected(self) -> float | None:
        """The cost of one prediction not made yet (dry runs): per-second parts use ``expected_seconds``."""
        return self.cost(self.expected_seconds)


Prices = Mapping[str, Price]


def parse_prices(raw: Any, *, key: str = "prices") -> dict[str, Price]:
    """The price table of the config (None or a mapping of ``owner/name`` to a price entry).

    Raises ConfigError naming the entry (``prices.<model>.<field>``) for a model that is not
    ``owner/name``, an unknown field, a value that is not a finite number >= 0, or an entry without
    ``per_prediction`` or ``per_second``.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping of models (owner/name) to prices{EXAMPLE}")
    return {str(model): _price(f"{key}.{model}", str(model), entry) for model, entry in raw.items()}


def _price(where: str, model: str, entry: Any) -> Price:
    if not MODEL_FORM.match(model):
        raise ConfigError(f"{where}: a price is keyed by the model's owner/name (no version){EXAMPLE}")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping such as {{per_prediction: 0.003}}{EXAMPLE}")
    values: dict[str, float] = {}
    for name, value in entry.items():
        if name not in PRICE_KEYS:
            raise ConfigError(f"unknown setting '{where}.{name}' (a price has {', '.join(PRICE_KEYS)})")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where}.{name} must be a number >= 0, not {value!r}")
        if value < 0 or (name == "expected_seconds" and value == 0):
            bound = "> 0" if name == "expected_seconds" else ">= 0"
            raise ConfigError(f"{where}.{name} must be a number {bound}, not {value!r}")
        values[str(name)] = float(value)
    if "per_prediction" not in values and "per_second" not in values:
        raise ConfigError(f"{where} needs per_prediction or per_second (or both){EXAMPLE}")
    return Price(**values)


def prices_for(prices: Prices, models: Iterable[str]) -> dict[str, Price]:
    """The entries of ``prices`` for ``models`` (what a run's record keeps)."""
    return {model: prices[model] for model in dict.fromkeys(models) if model in prices}


def price_json(prices: Prices) -> dict[str, dict[str, Any]]:
    """The table as JSON-ready data."""
    return {model: asdict(price) for model, price in prices.items()}


def read_prices(raw: Any) -> dict[str, Price]:
    """A table read back from a file (run.json): entries that are not well-formed are left out."""
    if not isinstance(raw, Mapping):
        return {}
    table: dict[str, Price] = {}
    for model, entry in raw.items():
        try:
            table[str(model)] = _price(str(model), str(model), _drop_nulls(entry))
        except ConfigError:
            continue
    return table


def _drop_nulls(entry: Any) -> Any:
    return {k: v for k, v in entry.items() if v is not None} if isinstance(entry, Mapping) else entry


def estimate(prices: Prices, model: str, count: int) -> float | None:
    """The estimated cost of ``count`` predictions of ``model`` not made yet (a dry run); None when
    ``model`` has no price, or a per-second price without ``expected_seconds``. Zero predictions cost 0."""
    if count <= 0:
        return 0.0
    price = prices.get(model)
    each = price.expected() if price is not None else None
    return None if each is None else round(each * count, 6)


def estimate_total(prices: Prices, counts: Mapping[str, int]) -> float | None:
    """The estimated cost of ``counts`` (model -> predictions not made yet); None when the table is
    empty or any model with a prediction to pay for cannot be estimated."""
    if not prices:
        return None
    total = 0.0
    for model, count in counts.items():
        cost = estimate(prices, model, count)
        if cost is None:
            return None
        total += cost
    return round(total, 6)


def unpriced(prices: Prices, counts: Mapping[str, int]) -> list[str]:
    """The models of ``counts`` (with predictions to pay for) whose cost cannot be estimated."""
    return [m for m, n in counts.items() if n > 0 and estimate(prices, m, n) is None]


def format_cost(cost: float | None) -> str:
    """A cost for people: four decimals (prices per prediction are fractions of a cent), or ``-``."""
    if cost is None:
        return "-"
    return f"{cost:.4f}"


def estimate_line(prices: Prices, counts: Mapping[str, int], *, more: str = "") -> str:
    """The dry run's sentence about money for ``counts`` (model -> predictions it would pay for);
    ``more`` names what the count leaves out (``plus the items of 1 foreach step``)."""
    total = estimate_total(prices, counts)
    tail = f", {more}" if more else ""
    if total is None:
        missing = unpriced(prices, counts)
        return (
            f"Estimated cost: unknown{tail}: no usable price for {', '.join(missing)} "
            "(prices: per_prediction, or per_second with expected_seconds)"
        )
    shown = " + ".join(f"{n} {m}" for m, n in counts.items() if n > 0) or "nothing to pay for"
    return f"Estimated cost: {format_cost(total)} for {shown}{tail}, from the prices in the config"
