"""Keeps the generated sections of the docs in step with the code.

``python -m football_realtime.docs_config`` prints the configuration reference;
``--write docs/configuration.md`` (or ``docs/operations.md``) replaces the
generated sections of that file and ``--check PATH`` exits 1 when one is out of
date. The tables come from ``settings_reference.py``; the command-line flags from
the real parser (``cli.build_parser``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import settings_reference
from .cli import build_parser
from .settings_reference import (
    BEGIN,
    END,
    METRICS_BEGIN,
    METRICS_END,
    SettingSpec,
    metrics_reference,
    setting_specs,
)


def reference() -> str:
    """The generated part of docs/configuration.md (markers included)."""
    return settings_reference.reference(build_parser())


def command_flags_table() -> str:
    return settings_reference.command_flags_table(build_parser())


SECTIONS = ((BEGIN, END, reference), (METRICS_BEGIN, METRICS_END, metrics_reference))


def replace_generated(text: str) -> str:
    """``text`` with every generated section it has re-rendered."""
    found = False
    for begin, end_marker, render in SECTIONS:
        start = text.find(begin)
        end = text.find(end_marker)
        if start < 0:
            continue
        if end < start:
            raise ValueError(f"{end_marker} is missing")
        found = True
        text = text[:start] + render() + text[end + len(end_marker) :]
    if not found:
        raise ValueError("no generated-section markers found")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m football_realtime.docs_config")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="rewrite the generated part of PATH")
    group.add_argument("--check", metavar="PATH", help="exit 1 if PATH is out of date")
    args = ap.parse_args(argv)
    if args.write or args.check:
        path = Path(args.write or args.check)
        text = path.read_text(encoding="utf-8")
        new = replace_generated(text)
        if args.check:
            if new != text:
                print(
                    f"{path} is out of date: run python -m football_realtime.docs_config "
                    f"--write {path}",
                    file=sys.stderr,
                )
                return 1
            return 0
        path.write_text(new, encoding="utf-8")
        return 0
    print(reference())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = [
    "SettingSpec",
    "command_flags_table",
    "main",
    "metrics_reference",
    "reference",
    "replace_generated",
    "setting_specs",
]
