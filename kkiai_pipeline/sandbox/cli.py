"""``kkiai-sandbox``: serve the offline emulator of the kkiai API in the foreground.

    kkiai-sandbox --port 0 --queue-seconds 0.1 --predict-seconds 0.5

prints ``kkiai sandbox listening on http://127.0.0.1:<port>/replicate/v1`` once it accepts
connections, and runs until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .app import create_app
from .config import DEFAULT_FAIL_MARKER, SandboxConfig
from .server import API_PATH, bind, build_server, root_url


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
    parser.add_argument("--token", default=None, help="the only bearer token to accept (default: any)")
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
    return parser


def config_from(args: argparse.Namespace) -> SandboxConfig:
    """The SandboxConfig that parsed arguments describe."""
    return SandboxConfig(
        host=args.host,
        port=args.port,
        queue_seconds=args.queue_seconds,
        predict_seconds=args.predict_seconds,
        token=args.token,
        fail_marker=args.fail_marker,
        sync_final_status=args.sync_final_status,
        data_uri_outputs=args.data_uri_outputs,
        workers=args.workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serves until interrupted; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from(args)
        sock = bind(config.host, config.port)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        server = build_server(create_app(config))
        print(f"kkiai sandbox listening on {root_url(sock)}{API_PATH}", flush=True)
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
