"""Command line: ``football-realtime serve``, ``config``, ``schema``, ``demo`` and ``listen``.

``serve``, ``config`` and ``demo`` take one flag per setting, generated from
:class:`Settings` (secrets are environment-only); a flag wins over its ``REALTIME_*``
variable. Invalid values are refused with exit code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError

from .client import listen
from .config import Settings
from .demo.cli import add_demo_parser, run_demo
from .serve import serve
from .settings_cli import (
    EXIT_INVALID_CONFIG,
    add_settings_arguments,
    explain_invalid,
    flag_overrides,
)
from .settings_reference import SettingSpec, reference, setting_specs
from .workers import run_workers


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


def redact_url(value: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``; also a Sentinel URL's
    several hosts and its ``sentinel_password`` query parameter."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = _SENTINEL_PASSWORD.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return value
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_SENTINEL_PASSWORD = re.compile(r"((?:^|&)sentinel_password=)[^&]*")


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
        print(reference(parser))
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
        if settings.workers > 1:
            return run_workers(settings, args.ssl_certfile, args.ssl_keyfile)
        serve(settings, args.ssl_certfile, args.ssl_keyfile)
        return 0
    return EXIT_INVALID_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
