"""Multi-process test support: service instances sharing a redis-server, and a client
that follows streams across reconnects the way the recovery contract says a client should.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
import websockets

from .support import ADMIN, JWT_SECRET, TIMEOUT, admin_headers, free_port, token


@dataclass
class Instance:
    """``python -m football_realtime serve`` with its own log file."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.http_url}{path}", timeout=TIMEOUT, **kw)

    def broadcast(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.http_url}/realtime/broadcast",
            json=body,
            headers={**admin_headers(), **headers},
            timeout=TIMEOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(TIMEOUT)

    def terminate(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(TIMEOUT * 2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def spawn(name: str, env: dict[str, str], logdir: Path) -> Instance:
    port = free_port()
    log_path = logdir / f"{name}.log"
    full_env = {
        **os.environ,
        "REALTIME_ADMIN_TOKEN": ADMIN,
        "REALTIME_JWT_SECRET": JWT_SECRET,
        "REALTIME_LOG_LEVEL": "warning",
        "REALTIME_ACCESS_LOG": "false",
        "REALTIME_INSTANCE_ID": name,
        **env,
    }
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "football_realtime", "serve", "--port", str(port)],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Instance(name, port, proc, log_path)


def wait_healthy(instances: list[Instance], timeout: float = TIMEOUT * 3) -> None:
    deadline = time.monotonic() + timeout
    pending = list(instances)
    while pending:
        inst = pending[0]
        if not inst.alive():
            raise RuntimeError(f"{inst.name} exited early:\n{inst.log()[-3000:]}")
        try:
            if inst.get("/realtime/health").status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{inst.name} did not become healthy:\n{inst.log()[-3000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def instances(names: list[str], redis_url: str, **env: str) -> Iterator[list[Instance]]:
    """Start service instances in parallel, all on ``redis_url``; stop them afterwards."""
    logdir = Path(tempfile.mkdtemp(prefix="frt-instances-"))
    base = {"REALTIME_BROKER_URL": redis_url, "REALTIME_CLUSTER_HEARTBEAT_INTERVAL": "0.5"}
    base.update(env)
    started = [spawn(n, base, logdir) for n in names]
    try:
        wait_healthy(started)
        yield started
    finally:
        for inst in started:
            inst.terminate()


def with_token(url: str) -> str:
    """The URL with a premium token for its ``user_id`` (the free tier sees only two types)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("token", token(query.get("user_id", "follower")))
    return urlunsplit(parts._replace(query=urlencode(query)))


def score(match_id: int, n: int, league: str = "英超") -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {
            "match_id": match_id,
            "home_score": n,
            "away_score": 0,
            "minute": n % 90,
            "league": league,
        },
    }


@dataclass
class Follower:
    """A client that keeps its place per stream and reconnects with ``since``.

    Every published event it receives is kept in ``events``; ``positions`` is what
    it would send as ``since`` (epoch from the ack, offset of the last event received,
    or the ack's offset when none arrived yet)."""

    subscription_type: str
    filters: dict[str, Any] = field(default_factory=dict)
    snapshot: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    connection_ids: list[str] = field(default_factory=list)
    instance_ids: list[str] = field(default_factory=list)
    ws: Any = None
    task: asyncio.Task[None] | None = None
    _ack: asyncio.Future[dict[str, Any]] | None = None
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, url: str, *, recover: bool = True) -> dict[str, Any]:
        """Connect and subscribe (with ``since`` if we have positions); the ack's result."""
        self._closed = asyncio.Event()
        self.ws = await websockets.connect(with_token(url), open_timeout=TIMEOUT, max_size=2**24)
        hello = orjson.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        assert hello["data"]["status"] == "connected", hello
        self.connection_ids.append(hello["data"]["connection_id"])
        self.instance_ids.append(hello["data"]["instance_id"])
        loop = asyncio.get_running_loop()
        self._ack = loop.create_future()
        self.task = asyncio.create_task(self._read())
        data: dict[str, Any] = {
            "subscription_type": self.subscription_type,
            "filters": self.filters,
        }
        if recover and self.positions:
            data["since"] = self.positions
        if self.snapshot:
            data["snapshot"] = True
        deadline = loop.time() + TIMEOUT
        while True:
            await self.ws.send(
                orjson.dumps({"type": "subscribe", "id": "s", "data": data}).decode()
            )
            reply = await asyncio.wait_for(self._ack, TIMEOUT)
            # `unavailable`: the instance's broker is reconnecting (docs/protocol.md says
            # retry shortly), e.g. right after a Redis restart; anything else is final.
            if reply["data"].get("code") != "unavailable" or loop.time() > deadline:
                break
            self._ack = loop.create_future()
            await asyncio.sleep(0.1)
        assert reply["event_type"] == "message_ack", reply
        result: dict[str, Any] = reply["data"]["result"]
        self.acks.append(result)
        for st, pos in result["streams"].items():
            mine = self.positions.get(st)
            if mine is None or mine["epoch"] != pos["epoch"] or not result.get("recovered"):
                # New to this stream, or told to reload: start from the ack's position.
                self.positions[st] = dict(pos)
        return result

    async def _read(self) -> None:
        code: int | None = None
        try:
            async for raw in self.ws:
                msg = orjson.loads(raw)
                et = msg.get("event_type")
                if "offset" in msg:
                    self.events.append(msg)
                    pos = self.positions.setdefault(msg["stream"], {"epoch": None, "offset": 0})
                    pos["offset"] = msg["offset"]
                elif et in ("message_ack", "error") and msg["data"].get("id") == "s":
                    if self._ack is not None and not self._ack.done():
                        self._ack.set_result(msg)
                elif et == "connection_status":
                    self.statuses.append(msg["data"])
        except websockets.ConnectionClosed:
            pass
        finally:
            close = getattr(self.ws, "close_code", None)
            code = close if close is not None else None
            rcvd = getattr(self.ws, "close_rcvd", None)
            if rcvd is not None:
                code = rcvd.code
            self.close_codes.append(code)
            self._closed.set()
            if self._ack is not None and not self._ack.done():
                self._ack.set_exception(ConnectionError("closed before the ack"))

    async def wait_closed(self, timeout: float = TIMEOUT) -> int | None:
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_codes[-1]

    async def drop(self) -> None:
        """Vanish without a closing handshake (a client killed mid-stream)."""
        self.ws.transport.abort()
        await self.wait_closed()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, TIMEOUT)

    async def wait_offset(self, stream: str, offset: int, timeout: float = TIMEOUT) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.positions.get(stream, {}).get("offset", 0) < offset:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{stream} offset {offset} not reached; at {self.positions.get(stream)}"
                )
            await asyncio.sleep(0.01)

    def offsets(self, stream: str) -> list[int]:
        return [e["offset"] for e in self.events if e["stream"] == stream]


def assert_exactly(offsets: list[int], expected: list[int]) -> None:
    """Every expected offset once, in order: no gap, no duplicate."""
    dups = sorted({o for o in offsets if offsets.count(o) > 1})
    missing = sorted(set(expected) - set(offsets))
    extra = sorted(set(offsets) - set(expected))
    assert not dups and not missing and not extra and offsets == expected, (
        f"duplicates {dups[:10]}, missing {missing[:10]}, unexpected {extra[:10]}, "
        f"ordered {offsets == sorted(offsets)}"
    )


def prediction(
    prediction_id: int, match_id: int, confidence: float, kind: str = "created"
) -> dict[str, Any]:
    return {
        "event_type": f"prediction_{kind}",
        "data": {
            "prediction_id": prediction_id,
            "match_id": match_id,
            "prediction": "home_win",
            "confidence": confidence,
            "home_win_prob": 0.6,
            "draw_prob": 0.25,
            "away_win_prob": 0.15,
        },
    }


def odds(match_id: int, bookmaker: str, home: float) -> dict[str, Any]:
    return {
        "event_type": "odds_updated",
        "data": {
            "match_id": match_id,
            "bookmaker": bookmaker,
            "home_odds": home,
            "draw_odds": 3.2,
            "away_odds": 4.5,
        },
    }
