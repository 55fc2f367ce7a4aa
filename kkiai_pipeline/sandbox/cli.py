"""``kkiai-sandbox``: serve the offline emulator of the kkiai API in the foreground.

    kkiai-sandbox --port 0 --queue-seconds 0.1 --predict-seconds 0.5
    kkiai-sandbox --fault-seed 7 --poll-5xx-rate 0.1 --drop-after-create-rate 0.05 --enforce-rate-limits
    kkiai-sandbox --store /tmp/sandbox-store --file-ttl 60

prints ``kkiai sandbox listening on http://127.0.0.1:<port>/replicate/v1`` once it accepts
connections, and runs until interrupted (Ctrl-C). There is one option per ``SandboxConfig`` field,
named after it (``--poll-5xx-rate`` sets ``poll_5xx_rate``). Without ``--store`` the predictions are
kept in ``$XDG_CACHE_HOME/kkiai-pipeline/sandbox`` (``~/.cache/...`` when it is not set).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from ..sockets import bind
from .app import create_app
from .config import DEFAULT_FAIL_MARKER, SandboxConfig, with_default_store
from .database import StoreError
from .server import API_PATH, build_server, root_url


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, one per SandboxConfig field."""
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(prog="kkiai-sandbox", description="Offline emulator of the kkiai API.")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default=defaults.host, help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--queue-seconds", type=float, default=defaults.queue_seconds, help="time spent 'starting'"
    )
    parser.add_argument(
        "--predict-seconds", type=float, default=defaults.predict_seconds, help="time spent 'processing'"
    )
    parser.add_argument(
        "--token", default=None, help="the only bearer token accepted, on all but /files (default: any)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        help="larger request bodies are answered 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-marker", default=DEFAULT_FAIL_MARKER, help="input text that makes a prediction fail"
    )
    parser.add_argument(
        "--sync-final-status",
        choices=("processing", "succeeded"),
        default=defaults.sync_final_status,
        help="status of a finished prediction in a Prefer: wait response",
    )
    parser.add_argument(
        "--data-uri-outputs", action="store_true", help="give files as data: URIs in Prefer: wait responses"
    )
    parser.add_argument("--workers", type=int, default=defaults.workers, help="threads drawing output files")
    parser.add_argument(
        "--store",
        default=None,
        help="directory of the persistent store (default: $XDG_CACHE_HOME/kkiai-pipeline/sandbox)",
    )
    parser.add_argument(
        "--file-ttl",
        type=float,
        default=defaults.file_ttl,
        help="seconds output files are kept after a prediction completed (default: %(default)s)",
    )
    _add_options(parser.add_argument_group("fault injection (rates: shares from 0 to 1)"), _FAULTS, defaults)
    limits = parser.add_argument_group("rate limits and deadlines")
    _add_options(limits, _LIMITS, defaults)
    limits.add_argument(
        "--enforce-rate-limits", action="store_true", help="answer calls over the limits with 429"
    )
    return parser


_FAULTS: tuple[tuple[str, type, str], ...] = (
    ("fault_seed", int, "seed of the fault draws"),
    ("poll_5xx_rate", float, "polls and cancels answered 500/502/503/504"),
    ("create_429_rate", float, "creates answered 429 (nothing created)"),
    ("retry_after_seconds", int, "retry_after of injected 429s"),
    ("drop_before_create_rate", float, "creates dropped before anything is created"),
    ("drop_after_create_rate", float, "creates dropped after the prediction is created"),
    ("drop_poll_rate", float, "polls dropped halfway through the body"),
    ("slow_rate", float, "responses held back --slow-seconds"),
    ("slow_seconds", float, "how long a slow response is held back"),
    ("fail_rate", float, "predictions that end failed (E1001 or E6716)"),
    ("file_5xx_rate", float, "file downloads answered 5xx"),
    ("drop_file_rate", float, "file downloads dropped halfway through the body"),
)

_LIMITS: tuple[tuple[str, type, str], ...] = (
    ("create_rate_per_minute", int, "creates allowed a minute"),
    ("other_rate_per_minute", int, "other API calls allowed a minute"),
    ("min_cancel_after_seconds", float, "shortest Cancel-After; shorter ones are raised to it"),
)


def _add_options(
    group: argparse._ArgumentGroup, options: tuple[tuple[str, type, str], ...], defaults: SandboxConfig
) -> None:
    """One ``--some-field`` option per ``(field, type, help)``, defaulting to the field's default."""
    for name, kind, text in options:
        option = "--" + name.replace("_", "-")
        group.add_argument(
            option, type=kind, default=getattr(defaults, name), help=f"{text} (default: %(default)s)"
        )


def config_from(args: argparse.Namespace) -> SandboxConfig:
    """The SandboxConfig that parsed arguments describe (each option is named after its field)."""
    return SandboxConfig(**{field.name: getattr(args, field.name) for field in fields(SandboxConfig)})


def main(argv: Sequence[str] | None = None) -> int:
    """Serves until interrupted; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = with_default_store(config_from(args), os.environ)
        app = create_app(config)
        sock = bind(config.host, config.port)
    except (ValueError, OSError, StoreError) as exc:
        parser.error(str(exc))
    try:
        server = build_server(app)
        print(f"kkiai sandbox listening on {root_url(sock)}{API_PATH}", flush=True)
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
