"""Command line: ``football-realtime serve``, ``config``, ``schema``, ``demo`` and ``listen``.

``serve``, ``config`` and ``demo`` take one flag per setting, generated from
:class:`Settings` (secrets are environment-only); a flag wins over its ``REALTIME_*``
variable. Invalid values are refused with exit code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError

from .client import listen
from .config import Settings
from .demo.cli import add_demo_parser, run_demo
from .docs_config import SettingSpec, setting_specs

EXIT_INVALID_CONFIG = 2


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "settings", "each flag overrides its REALTIME_* environment variable"
    )
    for spec in setting_specs():
        if spec.flag is None:
            continue
        help_text = f"{spec.description} [{spec.env}]".replace("%", "%%")
        if spec.is_bool:
            group.add_argument(
                spec.flag,
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                spec.flag, dest=spec.name, default=None, metavar="VALUE", help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="football-realtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the service")
    add_settings_arguments(p_serve)
    p_serve.add_argument("--ssl-certfile", help="TLS certificate (PEM): serve https and wss")
    p_serve.add_argument("--ssl-keyfile", help="TLS private key (PEM) for --ssl-certfile")

    p_config = sub.add_parser(
        "config",
        help="print the effective configuration (secrets redacted) and exit; "
        "exit code 2 if a value is invalid",
    )
    add_settings_arguments(p_config)
    fmt = p_config.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the configuration as JSON")
    fmt.add_argument(
        "--markdown",
        action="store_true",
        help="print the configuration reference table (docs/configuration.md) instead",
    )

    p_schema = sub.add_parser(
        "schema", help="print the wire protocol's JSON Schema (sorted, for diffing) and exit"
    )
    p_schema.add_argument("--out", help="write to this file instead of standard output")

    add_demo_parser(sub)
    listen.add_arguments(sub.add_parser("listen", help="print live events (for operators)"))
    return parser


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


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (they win over the environment)."""
    return {
        s.name: getattr(args, s.name)
        for s in setting_specs()
        if getattr(args, s.name, None) is not None
    }


def explain_invalid(exc: ValidationError, overrides: dict[str, Any]) -> list[str]:
    specs = {s.name: s for s in setting_specs()}
    lines = []
    for e in exc.errors(include_url=False):
        name = str(e["loc"][0]) if e["loc"] else ""
        spec = specs.get(name)
        if spec is None:
            lines.append(f"invalid configuration: {e['msg']}")
            continue
        where = spec.env
        if name in overrides and spec.flag:
            where += f" (given as {spec.flag})"
        shown = "" if spec.secret else f" = {e.get('input')!r}"
        lines.append(f"invalid configuration: {where}{shown}: {e['msg']}")
    return lines


def redact_url(value: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _display(spec: SettingSpec, value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "<redacted>"
    if isinstance(value, str):
        return redact_url(value)
    return value


def _source(spec: SettingSpec, overrides: dict[str, Any]) -> str:
    if spec.name in overrides:
        return f"flag {spec.flag}"
    env = {k.upper() for k in os.environ}
    if spec.env in env:
        return "environment"
    return "generated" if spec.field.default_factory is not None else "default"


def effective_config(settings: Settings, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for spec in setting_specs():
        value = getattr(settings, spec.name)
        rows.append(
            {
                "variable": spec.env,
                "value": _display(spec, value),
                "source": _source(spec, overrides),
            }
        )
    return rows


def _env_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def print_config(args: argparse.Namespace, settings: Settings, overrides: dict[str, Any]) -> None:
    rows = effective_config(settings, overrides)
    if args.json:
        print(json.dumps({r["variable"]: r["value"] for r in rows}, indent=2, ensure_ascii=False))
        return
    print("# football-realtime effective configuration (secrets redacted)")
    for r in rows:
        line = f"{r['variable']}={_env_text(r['value'])}"
        note = r["source"]
        if r["variable"] == "REALTIME_ADMIN_TOKEN" and r["value"] is None:
            note += "; unset: a random token is generated at start-up"
        print(f"{line}  # {note}")


def tune_gc() -> None:
    """Keep the cyclic garbage collector's work per accepted connection low without
    long pauses.

    Everything built at start-up (FastAPI, pydantic models, the app) lives as long as the
    process: freezing it keeps collections from re-scanning it. The first threshold goes
    from 700 to 10,000 allocations: with CPython's defaults, full collections ran about
    ten times while 10,000 connections were accepted, each pausing the loop up to 350 ms
    (the heap grows by a quarter between them); with 10,000 a young collection pauses
    ~2 ms, an older one ~40 ms at 10,000 connections, and accepting costs ~100 µs less.
    Larger thresholds save a little more per accept but let one collection scan up to a
    million objects (a 250 ms pause). Measured in docs/performance.md.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def serve(
    settings: Settings,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    app: Any = None,
) -> None:
    """Run ``app`` (default: the plain service) with the settings' server options."""
    import uvicorn

    from . import logredact
    from .app import create_app
    from .logs import configure_logging
    from .server import uvicorn_config

    configure_logging(settings)
    routes = None
    if app is None:
        app = create_app(settings)
        # The service's own WebSocket routes, called directly by our WebSocket layer.
        routes = app.state.realtime.ws_routes()
    tune_gc()
    config = uvicorn_config(
        app,
        settings,
        routes=routes,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_config=None,  # keep the handler configure_logging installed
    )
    logredact.install()  # after logging is configured: tokens never reach a log
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run does


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "schema":
        return write_schema(args.out)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "listen":
        return listen.run(args)
    if args.command == "config" and args.markdown:
        from .docs_config import reference

        print(reference())
        return 0
    overrides = flag_overrides(args)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for line in explain_invalid(exc, overrides):
            print(line, file=sys.stderr)
        return EXIT_INVALID_CONFIG
    if args.command == "config":
        print_config(args, settings, overrides)
        return 0
    if args.command == "serve":
        serve(settings, args.ssl_certfile, args.ssl_keyfile)
        return 0
    return EXIT_INVALID_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
