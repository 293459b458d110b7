"""docs/protocol.md keeps the close-code and error-code tables of the code."""

from __future__ import annotations

import re
from pathlib import Path

from football_realtime.core.close_codes import CLOSE_CODE_DOCS, CloseCode
from football_realtime.core.protocol import ERROR_CODES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def section(text: str, name: str) -> str:
    m = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert m, f"markers for {name} missing"
    return m.group(1)


def test_close_code_table_matches_the_code() -> None:
    rows = ["| code | name | meaning | client should |", "|---|---|---|---|"]
    for code in CloseCode:
        meaning, action = CLOSE_CODE_DOCS[code]
        rows.append(f"| {int(code)} | {code.name} | {meaning} | {action} |")
    expected = "\n".join(rows) + "\n"
    assert section((DOCS / "protocol.md").read_text(), "close-codes") == expected, expected


def test_every_close_code_is_documented() -> None:
    assert set(CLOSE_CODE_DOCS) == set(CloseCode)


def test_error_code_table_matches_the_code() -> None:
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| `{code}` | {text} |" for code, text in ERROR_CODES.items()]
    expected = "\n".join(rows) + "\n"
    assert section((DOCS / "protocol.md").read_text(), "error-codes") == expected, expected


def test_reliability_md_states_the_clients_liveness_and_backoff_defaults() -> None:
    """docs/reliability.md explains these defaults: it must name the ones the code has."""
    import inspect

    from football_realtime.client import RealtimeClient

    params = inspect.signature(RealtimeClient.__init__).parameters
    interval = params["heartbeat_interval"].default
    timeout = params["heartbeat_timeout"].default
    max_delay = params["max_reconnect_delay"].default
    text = " ".join((DOCS / "reliability.md").read_text().split())
    line = f"heartbeat every {interval:g} s, dead after {interval + timeout:g} s of silence"
    assert line in text, line
    assert f"backoff 0.5 s to {max_delay:g} s" in text
    ts = (DOCS.parent / "clients" / "js" / "src" / "service.ts").read_text()
    assert f"heartbeatInterval: {int(interval * 1000):_}," in ts
    assert f"heartbeatTimeout: {int(timeout * 1000):_}," in ts
    assert f"maxReconnectDelay: {int(max_delay * 1000):_}," in ts
