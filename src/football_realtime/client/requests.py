"""Requests on one connection: ids, the replies awaited, typed errors.

Every request carries an ``id``; the server answers each with a ``message_ack`` or an
``error`` with the same id, in request order. A :class:`RequestChannel` sends
requests on one socket and settles them from the replies its reader hands over. A
request may carry callbacks that run when its reply arrives, in the reader, before
anything read after it; what they return is delivered in the reply's place. When
the connection ends, every request still waiting fails with :class:`Lost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
from websockets.exceptions import ConnectionClosed

from .errors import RealtimeClientError, RequestError, RequestTimeout, request_error

log = logging.getLogger("football_realtime.client")

T = TypeVar("T")


class Lost(RealtimeClientError):
    """The connection a request was sent on ended before its reply."""


class Sender(Protocol):
    """The one thing a channel needs of a socket (``websockets``' connection has it)."""

    async def send(self, message: str) -> None: ...


@dataclass(slots=True)
class Pending(Generic[T]):
    future: asyncio.Future[dict[str, Any]]
    type: str
    on_ack: Callable[[dict[str, Any]], list[T]] | None = None
    on_error: Callable[[RequestError], list[T]] | None = None


class RequestChannel(Generic[T]):
    """The requests sent on one socket and not answered yet.

    ``ids`` is shared by all of a client's connections, so an id is never reused.
    """

    def __init__(self, ws: Sender, ids: Iterator[int]) -> None:
        self._ws = ws
        self._ids = ids
        self._pending: dict[int, Pending[T]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    async def send(
        self,
        type_: str,
        data: dict[str, Any] | None,
        on_ack: Callable[[dict[str, Any]], list[T]] | None = None,
        on_error: Callable[[RequestError], list[T]] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a request; the future gets the ack's ``result`` or the typed error.

        Raises :class:`Lost` if the socket is closed already."""
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self._pending[rid] = Pending(fut, type_, on_ack, on_error)
        msg: dict[str, Any] = {"type": type_, "id": rid}
        if data is not None:
            msg["data"] = data
        try:
            await self._ws.send(orjson.dumps(msg).decode())
        except ConnectionClosed:
            self._pending.pop(rid, None)
            raise Lost("connection closed") from None
        return fut

    async def post(self, type_: str, data: dict[str, Any] | None) -> None:
        """Send a message that gets no reply when valid (``ack``): no id, nothing
        awaited; an ``error`` for it comes without an id and is logged.

        Raises :class:`Lost` if the socket is closed already."""
        msg: dict[str, Any] = {"type": type_}
        if data is not None:
            msg["data"] = data
        try:
            await self._ws.send(orjson.dumps(msg).decode())
        except ConnectionClosed:
            raise Lost("connection closed") from None

    async def fire(self, type_: str, data: dict[str, Any] | None) -> None:
        """Send a request whose reply nobody waits for."""
        await self.send(type_, data)

    async def request(
        self, type_: str, data: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        """Send a request and wait for its reply, at most ``timeout`` seconds."""
        fut = await self.send(type_, data)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(timeout, 0.0))
        except TimeoutError:
            raise RequestTimeout(f"no reply to {type_} within the timeout") from None

    def resolve(self, msg: dict[str, Any], is_error: bool) -> list[T]:
        """Settle the request a ``message_ack`` (or ``error``) answers; returns what its
        callback gives to deliver. A reply to no known request is ignored (an error
        reply is logged)."""
        data = msg.get("data")
        if not isinstance(data, dict):
            return []
        rid = data.get("id")
        pending = self._pending.pop(rid, None) if type(rid) is int else None
        if pending is None:
            if is_error:
                log.warning("server error: %s: %s", data.get("code"), data.get("message"))
            return []
        out: list[T] = []
        if is_error:
            exc = request_error(
                str(data.get("code")), str(data.get("message")), data.get("type") or pending.type
            )
            if pending.on_error is not None:
                out = pending.on_error(exc)
            if not pending.future.done():
                pending.future.set_exception(exc)
        else:
            result = data.get("result")
            result = result if isinstance(result, dict) else {}
            if pending.on_ack is not None:
                out = pending.on_ack(result)
            if not pending.future.done():
                pending.future.set_result(result)
        return out

    def fail_all(self) -> None:
        """The connection ended: every request still waiting fails with :class:`Lost`."""
        lost = Lost("connection closed")
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(lost)
        self._pending.clear()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Replies nobody awaits (heartbeats, resubscriptions) must not warn when they fail.
    if not fut.cancelled():
        fut.exception()
