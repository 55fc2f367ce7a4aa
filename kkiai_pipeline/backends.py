"""The services a step can run on, registered by name: how to open each, and which service answers.

``api`` is the kkiai API (or the sandbox emulating it); ``cog`` is self-hosted Cog servers. A step's
``backend:`` names one; otherwise ``api=cog`` runs every step on Cog and anything else on the API.
Adding a backend means one entry here, its client module and its config.

``identity`` is part of every prediction key: the sandbox's results never stand in for the real
API's, nor one Cog server's for another's. The dry run and execution both take it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .api.backend import PredictionBackend
from .api.client import PredictionsClient
from .api.cog import CogClient
from .api.ratescope import scoped_limits
from .settings import Settings


@dataclass(frozen=True)
class BackendKind:
    """One registered backend."""

    open: Callable[[Settings, str, httpx.AsyncBaseTransport | None], PredictionBackend]
    identity: Callable[[Settings, str, str], str]  # (settings, base URL, version) -> service identity
    available: Callable[[Settings], bool]
    reattach: bool = True  # a prediction left by an earlier process can be followed by id (budget.py)


def _open_api(
    settings: Settings, base_url: str, transport: httpx.AsyncBaseTransport | None
) -> PredictionBackend:
    api, options = settings.api, settings.api.client
    limits = scoped_limits(
        base_url,
        scope=api.rate_scope,
        create_per_minute=options.create_rate_per_minute,
        other_per_minute=options.other_rate_per_minute,
        burst=options.burst,
        state_dir=settings.cache_dir,
    )
    return PredictionsClient(
        base_url=base_url, token=api.token, options=options, transport=transport, rate_limits=limits
    )


def _api_identity(settings: Settings, base_url: str, version: str) -> str:
    return "sandbox" if settings.api.kind == "sandbox" else f"kkiai:{base_url.rstrip('/')}"


def _open_cog(
    settings: Settings, base_url: str, transport: httpx.AsyncBaseTransport | None
) -> PredictionBackend:
    cog = settings.cog
    return CogClient(
        servers=cog.servers, concurrency=cog.concurrency, options=cog.options, transport=transport
    )


def _cog_identity(settings: Settings, base_url: str, version: str) -> str:
    model = version.partition(":")[0]
    return f"cog:{settings.cog.servers.get(model, '?').rstrip('/')}"


BACKENDS: dict[str, BackendKind] = {
    "api": BackendKind(_open_api, _api_identity, lambda s: s.api.kind != "cog", PredictionsClient.reattach),
    "cog": BackendKind(_open_cog, _cog_identity, lambda s: bool(s.cog.servers), CogClient.reattach),
}


def default_backend(settings: Settings) -> str:
    """Where steps without their own ``backend:`` run."""
    return "cog" if settings.api.kind == "cog" else "api"
