"""The quick start of docs/clients-python.md runs as written against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import pytest

from ..client_support import apublish, pred, until
from ..support import TIMEOUT, RunningServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients-python.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


async def test_quick_start_prints_events(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = python_blocks()[0]
    assert "asyncio.run(websocket_client())" in code
    code = code.replace("ws://localhost:8000/realtime/ws", server.ws_url)
    code = code.replace("asyncio.run(websocket_client())", "")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    task = asyncio.create_task(namespace["websocket_client"]())
    try:
        await until(lambda: len(server.realtime.hub.index) == 1)
        await apublish(server, pred(confidence=0.9))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        out = ""
        while "prediction_created" not in out:
            assert loop.time() < deadline, out
            await asyncio.sleep(0.01)
            out += capsys.readouterr().out
        assert "收到事件: prediction_created" in out
        assert "confidence=0.9" in out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_seed_troubleshooting_knobs_are_accepted() -> None:
    block = next(b for b in python_blocks() if "max_reconnect_attempts=10" in b)
    from football_realtime.client import RealtimeClient

    async def build() -> RealtimeClient:
        return eval(block.strip(), {"RealtimeClient": RealtimeClient, "url": "ws://h/realtime/ws"})

    client = asyncio.run(build())
    assert client.heartbeat_interval == 60
    assert client.max_reconnect_attempts == 10 and client.auto_reconnect
