"""Command line: ``football-realtime serve`` and ``listen`` (more subcommands join as they land)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .config import Settings


def _settings_from(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    overrides: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def serve(
    settings: Settings, ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> None:
    import uvicorn

    from .app import create_app
    from .wsprotocol import RealtimeWebSocketProtocol

    app = create_app(settings)
    ws: Any = RealtimeWebSocketProtocol if settings.fast_transport else "websockets-sansio"
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ws=ws,
        ws_max_size=settings.max_message_size,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        access_log=settings.access_log,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_graceful_shutdown=10,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="football-realtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the service")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--broker-url", dest="broker_url")
    p_serve.add_argument("--log-level", dest="log_level")
    p_serve.add_argument("--ssl-certfile")
    p_serve.add_argument("--ssl-keyfile")

    from .client import listen

    listen.add_arguments(sub.add_parser("listen", help="print live events (operators)"))

    args = parser.parse_args(argv)
    if args.command == "listen":
        return listen.run(args)
    if args.command == "serve":
        try:
            settings = _settings_from(args, ("host", "port", "broker_url", "log_level"))
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                name = "REALTIME_" + str(e["loc"][0]).upper() if e["loc"] else "settings"
                print(f"invalid configuration: {name}: {e['msg']}", file=sys.stderr)
            return 2
        serve(settings, args.ssl_certfile, args.ssl_keyfile)
        return 0
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
