"""Settings on the command line: one flag per setting, and clear refusals.

``serve``, ``config`` and ``demo`` take one flag per setting, generated from
:class:`Settings` (secrets are environment-only); a flag wins over its ``REALTIME_*``
variable. Invalid values are refused with exit code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from .settings_reference import setting_specs

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


__all__ = ["EXIT_INVALID_CONFIG", "add_settings_arguments", "explain_invalid", "flag_overrides"]
