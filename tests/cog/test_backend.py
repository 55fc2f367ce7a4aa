"""Both clients satisfy PredictionBackend; mypy checks these assignments (``mypy --strict tests/cog``)."""

from __future__ import annotations

import asyncio

from kkiai_pipeline.api.backend import PredictionBackend
from kkiai_pipeline.api.client import PredictionsClient
from kkiai_pipeline.api.cog import CogClient


def test_both_clients_are_prediction_backends() -> None:
    async def go() -> list[int]:
        backends: list[PredictionBackend] = [
            PredictionsClient(base_url="http://127.0.0.1:9", token=None),
            CogClient(servers={"a/b": "http://127.0.0.1:9"}),
        ]
        for backend in backends:
            await backend.aclose()
        return [backend.stats.requests + backend.stats.creates for backend in backends]

    assert asyncio.run(go()) == [0, 0]
