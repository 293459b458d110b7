"""Socket-free building blocks for the client's unit tests: a fake socket, options,
events, acks."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed

from football_realtime.client.connection import Connection
from football_realtime.client.dispatch import Delivery, Dispatcher
from football_realtime.client.lifecycle import Lifecycle
from football_realtime.client.models import ClientStats, Event, parse_event
from football_realtime.client.options import ClientOptions
from football_realtime.client.recovery import StreamTracker
from football_realtime.client.requests import RequestChannel
from football_realtime.client.resync import Resync
from football_realtime.client.session import ClientSession
from football_realtime.client.subscribe import Subscriber
from football_realtime.client.subscription import Subscription, SubscriptionRegistry

from ..client_support import PRED


class FakeSocket:
    """Records what is sent; ``closed`` makes ``send`` fail as a closed socket does."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.transport = None

    async def send(self, message: str) -> None:
        if self.closed:
            raise ConnectionClosed(None, None)
        self.sent.append(orjson.loads(message))

    def last(self, type_: str) -> dict[str, Any]:
        return next(m for m in reversed(self.sent) if m["type"] == type_)


def options(**kw: Any) -> ClientOptions:
    args: dict[str, Any] = {
        "url": "ws://127.0.0.1:1/realtime/ws",
        "user_id": None,
        "session_id": None,
        "token_transport": "query",
        "auto_reconnect": True,
        "max_reconnect_attempts": None,
        "min_reconnect_delay": 0.0,
        "max_reconnect_delay": 0.0,
        "heartbeat_interval": None,
        "heartbeat_timeout": 1.0,
        "request_timeout": 1.0,
        "open_timeout": 1.0,
        "max_queue": 100,
        "max_resync_events": 100,
        "max_message_size": 1 << 20,
        "on_recovery_failed": None,
        "connect_kwargs": None,
    }
    args.update(kw)
    return ClientOptions.checked(**args)


def event(offset: int | None, stream: str | None = "predictions", **data: Any) -> Event[Any]:
    envelope: dict[str, Any] = {"event_type": "prediction_created", "data": {**PRED, **data}}
    if stream is not None:
        envelope["stream"] = stream
    if offset is not None:
        envelope["offset"] = offset
    return parse_event(envelope)


def connection(resync: Resync, gen: int = 1) -> tuple[Connection, FakeSocket]:
    ws = FakeSocket()
    conn = Connection(
        ws,  # type: ignore[arg-type]
        gen,
        0.0,
        RequestChannel(ws, itertools.count(1)),
        resync.new_state(),
    )
    return conn, ws


def ack(rid: int, result: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"event_type": "message_ack", "data": {"id": rid, "result": result or {}}}


def error(rid: int, code: str, message: str = "no", type_: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": rid, "code": code, "message": message}
    if type_ is not None:
        data["type"] = type_
    return {"event_type": "error", "data": data}


def acked(sub: Subscription, match_ids: list[int] | None = None) -> Subscription:
    """``sub`` as confirmed by the server for prediction_created on predictions."""
    filters = {"match_ids": match_ids} if match_ids is not None else {}
    sub._apply_ack(
        {
            "subscription_id": f"server-{sub.id}",
            "event_types": ["prediction_created"],
            "filters": filters,
            "streams": {"predictions": {"epoch": "e1", "offset": 0}},
        }
    )
    return sub


class Owner:
    """A stand-in for the client a Subscription belongs to."""

    def __init__(self) -> None:
        self.removed: list[Subscription] = []

    async def unsubscribe(self, sub: Subscription) -> None:
        self.removed.append(sub)


class Client:
    """The parts of a client that work without a socket, wired as RealtimeClient does."""

    def __init__(self, **kw: Any) -> None:
        self.options = options(**kw)
        self.registry = SubscriptionRegistry()
        self.stats = ClientStats()
        self.tracker = StreamTracker()
        self.life = Lifecycle(Dispatcher(self.options, self.registry), self.registry)
        self.resync = Resync(self.options, self.tracker, self.stats, self.life)
        self.session = ClientSession(None, None, self.tracker)  # no durable session
        self.subscriber = Subscriber(
            self.options, self.registry, self.resync, self.life, self.session
        )

    def subscription(self, snapshot: bool = False) -> Subscription:
        sub = Subscription(Owner(), self.registry.new_id(), "predictions", {}, snapshot, 100)
        self.registry.add(sub)
        return sub

    def connect(self, gen: int = 1) -> tuple[Connection, FakeSocket]:
        conn, ws = connection(self.resync, gen)
        self.life.attach(conn)
        return conn, ws

    async def open(self, conn: Connection, ws: FakeSocket, **result: Any) -> list[Delivery]:
        """Renew every subscription on ``conn``, ack each with ``result``, pass the barrier."""
        out: list[Delivery] = []
        await self.subscriber.renew_all(conn)
        for msg in [m for m in ws.sent if m["type"] == "subscribe"]:
            out += conn.channel.resolve(ack(msg["id"], result), is_error=False)
        await self.resync.send_barrier(conn)
        out += conn.channel.resolve(ack(ws.last("heartbeat")["id"]), is_error=False)
        return out
