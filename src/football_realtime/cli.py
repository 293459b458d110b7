"""Command line: ``football-realtime serve`` (more subcommands join as they land)."""

from __future__ import annotations

import argparse
import contextlib
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

    from . import logredact
    from .app import create_app
    from .serving import uvicorn_config

    app = create_app(settings)
    config = uvicorn_config(app, settings, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    logredact.install()  # after uvicorn configured logging: tokens never reach a log
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run does


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

    args = parser.parse_args(argv)
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
