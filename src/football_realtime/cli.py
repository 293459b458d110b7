"""Command line: ``football-realtime serve``, ``schema`` and ``demo`` (more subcommands
join as they land)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .config import Settings
from .demo.cli import add_demo_parser, run_demo


def _settings_from(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    overrides: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def serve(
    settings: Settings,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    app: Any = None,
) -> None:
    """Run ``app`` (default: the plain service) with the settings' server options."""
    import uvicorn

    from .app import create_app
    from .wsprotocol import RealtimeWebSocketProtocol

    if app is None:
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


def write_schema(out: str | None) -> int:
    from .schema import schema_json

    text = schema_json()
    if out is None:
        sys.stdout.buffer.write(text)
        sys.stdout.buffer.flush()
    else:
        with open(out, "wb") as f:
            f.write(text)
    return 0


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
    add_demo_parser(sub)

    p_schema = sub.add_parser("schema", help="print the protocol's JSON Schema")
    p_schema.add_argument("--out", help="write to this file instead of standard output")

    args = parser.parse_args(argv)
    if args.command == "schema":
        return write_schema(args.out)
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
    if args.command == "demo":
        return run_demo(args)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
