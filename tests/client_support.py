"""Helpers for the Python client tests: event builders, a TCP proxy that can go
silent, and a counting listener that refuses every handshake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from football_realtime.client import Event, RecoveryFailed

from .support import TIMEOUT, UNIT, RunningServer, free_port, token


def valid_token(user_id: str = "user-1", n: int = 0) -> str:
    """A token the test servers accept for ``user_id`` (premium tier); ``n`` makes
    tokens for the same user differ."""
    return token(user_id, jti=str(n))


#: Client options for tests: quick reconnects, a valid token.
FAST: dict[str, Any] = {
    "min_reconnect_delay": 0.02 * UNIT,
    "max_reconnect_delay": 0.1 * UNIT,
    "request_timeout": TIMEOUT,
    "token": valid_token(),
}

PRED = {
    "prediction_id": 1,
    "match_id": 1,
    "league": "英超",
    "home_team": "曼联",
    "away_team": "切尔西",
    "prediction": "home_win",
    "confidence": 0.8,
    "home_win_prob": 0.6,
    "draw_prob": 0.25,
    "away_win_prob": 0.15,
}


def pred(**kw: Any) -> dict[str, Any]:
    return {"event_type": "prediction_created", "data": {**PRED, **kw}}


def score(match_id: int, home: int = 1, league: str = "英超", **kw: Any) -> dict[str, Any]:
    data = {"match_id": match_id, "league": league, "home_score": home, "away_score": 0, **kw}
    return {"event_type": "match_score_changed", "data": data}


async def apublish(srv: RunningServer, event: dict[str, Any]) -> Any:
    return await asyncio.to_thread(srv.publish, event)


async def take(
    source: Any, n: int, timeout: float = TIMEOUT, pred: Callable[[Any], bool] | None = None
) -> list[Any]:
    """The next ``n`` items of an async iterator (client or subscription) that satisfy
    ``pred`` (default: published events, i.e. with an offset)."""
    keep = pred or (lambda it: isinstance(it, Event) and it.offset is not None)
    out: list[Any] = []

    async def run() -> None:
        async for item in source:
            if keep(item):
                out.append(item)
                if len(out) == n:
                    return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"got {len(out)} of {n} items: {out[-5:]}") from None
    return out


async def drain(source: Any, timeout: float = TIMEOUT) -> list[Any]:
    """Everything an async iterator yields until it ends (or raises), within ``timeout``."""
    out: list[Any] = []

    async def run() -> None:
        async for item in source:
            out.append(item)

    await asyncio.wait_for(run(), timeout)
    return out


async def drain_until(
    source: Any, stop: Callable[[Any], bool], timeout: float = TIMEOUT
) -> list[Any]:
    """Items of an async iterator up to and including the first for which ``stop`` holds."""
    out: list[Any] = []

    async def run() -> None:
        async for item in source:
            out.append(item)
            if stop(item):
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"stop condition not met; last items: {out[-5:]}") from None
    return out


async def until(cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``cond()`` holds (checked every few milliseconds), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def is_notice(item: Any) -> bool:
    return isinstance(item, RecoveryFailed)


class TcpProxy:
    """Forwards a free local port to ``target_port``. ``freeze()`` makes every open
    connection silently drop traffic both ways (a half-dead network path) while new
    connections still pass. ``cut()`` drops every open connection without a close
    frame (a network failure); while ``refusing`` is set, new connections are closed
    at once. ``requests`` holds each connection's first bytes (the HTTP upgrade
    request)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.requests: list[bytes] = []
        self._frozen: set[int] = set()
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.refusing = False

    @property
    def accepted(self) -> int:
        return self._next

    def url(self, path: str = "/realtime/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self._server.wait_closed()

    def freeze(self) -> None:
        self._frozen.update(range(self._next))

    def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cid = self._next
        self._next += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        first = True

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            nonlocal first
            try:
                while data := await src.read(65536):
                    if up and first:
                        self.requests.append(data)
                        first = False
                    if cid in self._frozen:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.close()

        for t in (
            asyncio.create_task(pipe(reader, up_writer, True)),
            asyncio.create_task(pipe(up_reader, writer, False)),
        ):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)


@contextlib.asynccontextmanager
async def refusing_listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A port that accepts TCP and closes at once (no WebSocket handshake): yields
    (port, accepted) where ``accepted`` counts connection attempts."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield port, accepted
    finally:
        server.close()
        await server.wait_closed()
