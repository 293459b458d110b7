"""The WebSocket edge: handshake, connection registration, receive loop.

The endpoint adapts the request for admission (``service/admission.py``), builds the
:class:`Connection` with the sink that fits the server it runs on (``edges/sinks.py``),
and hands every text message to the service's request handler
(``service/requests.py``), which parses it and replies. What a connection receives is
decided by the hub. This module only moves data between the socket and the service.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..config import Settings
from ..core import protocol as proto
from ..core.close_codes import CloseCode
from ..core.encoding import server_message
from ..core.errors import LocalError
from ..core.events import EventType, SubscriptionType, utc_now_iso
from ..core.protocol import ProtocolError
from ..core.subscriptions import SubscriptionFilter
from ..logs import bind_connection
from ..service.admission import Admission, Refused
from ..service.connection import (
    FRAME_TRANSPORT,
    Connection,
    FrameTransport,
    SharedDeflate,
    Sink,
)
from ..service.durable_sessions import DurableSessions, SessionRefused, SessionRequest
from ..service.hub import Hub, new_connection_id
from ..service.requests import RequestHandler
from ..service.sessions import Sessions
from ..stats import ServiceStats
from .sinks import AsgiSink, FastSink

log = logging.getLogger("football_realtime.transport")


def protocol_of(scope: Mapping[str, Any]) -> FrameTransport | None:
    """The fast path the server offers this connection, if any (``FRAME_TRANSPORT``)."""
    entry = (scope.get("extensions") or {}).get(FRAME_TRANSPORT)
    return None if entry is None else entry.get("protocol")


_IDENT_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


class QueryError(LocalError, ValueError):
    pass


def _ident(ws: WebSocket, name: str) -> str | None:
    value = ws.query_params.get(name)
    if value is None or value == "":
        return None
    if not _IDENT_RE.match(value):
        raise QueryError(f"{name} must be 1-128 printable characters")
    return value


def _flag(ws: WebSocket, name: str) -> bool:
    value = ws.query_params.get(name)
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true", ""):
        return True
    raise QueryError(f"{name} must be 1/true or 0/false")


def _int_list(raw: str, name: str) -> list[int]:
    try:
        return [int(p) for p in raw.split(",") if p.strip() != ""]
    except ValueError:
        raise QueryError(f"{name} must be a comma-separated list of integers") from None


def query_filters(ws: WebSocket) -> SubscriptionFilter:
    """Filters given in the URL of a dedicated endpoint (``?match_ids=1,2&leagues=英超``)."""
    q = ws.query_params
    raw: dict[str, Any] = {}
    if "match_ids" in q:
        raw["match_ids"] = _int_list(q["match_ids"], "match_ids")
    if "leagues" in q:
        raw["leagues"] = [p.strip() for p in q["leagues"].split(",") if p.strip()]
    if "event_types" in q:
        raw["event_types"] = [p.strip() for p in q["event_types"].split(",") if p.strip()]
    if "min_confidence" in q:
        try:
            raw["min_confidence"] = float(q["min_confidence"])
        except ValueError:
            raise QueryError("min_confidence must be a number between 0 and 1") from None
    try:
        return proto.parse_filters(raw)
    except ProtocolError as exc:
        raise QueryError(exc.message) from None


def _session_request(
    ws: WebSocket, session_id: str | None, preset: SubscriptionType | None
) -> SessionRequest | None:
    """The durable session the query asks for (``session_id=new``, or an id with
    ``resume=1``); None: none (a ``session_id`` alone stays a label)."""
    try:
        request = SessionRequest.of(session_id, _flag(ws, "resume"))
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    if request is not None and preset is not None:
        raise QueryError("durable sessions are opened on /realtime/ws, not a dedicated endpoint")
    return request


def _auth_session(msg: proto.Auth, query: SessionRequest | None) -> SessionRequest | None:
    """The session the first ``auth`` asks for (else the query's)."""
    if msg.session_id is None and not msg.resume:
        return query
    return SessionRequest.of(msg.session_id, msg.resume)


def disconnect_code(message: Mapping[str, Any]) -> int:
    """The close code a ``websocket.disconnect`` message stands for, as stats and logs
    record it.

    1005 (no status received) is true only when the peer sent a close frame without a
    status code. uvicorn's WebSocket protocols (``websockets-sansio``, ``wsproto``) also
    send 1005 when the TCP connection simply ends, with no close frame at all, where
    1006 (abnormal closure) is the truth. The two are told apart by the ``reason`` key:
    uvicorn puts the close frame's reason (``""`` when it had none) in the message when
    a close frame arrived, and no ``reason`` when the connection was lost. So 1005
    without ``reason`` is recorded as 1006. A server that already says 1006 is taken at
    its word; our own layer (``serve``) sends 1006 itself.
    """
    code = message.get("code")
    if code is None:
        return int(CloseCode.NORMAL)
    if code == _NO_STATUS_RECEIVED and "reason" not in message:
        return int(CloseCode.ABNORMAL)
    return int(code)


_NO_STATUS_RECEIVED = 1005


class StarletteHandshake:
    """The upgrade request as admission reads it (``service.admission.Handshake``)."""

    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    @property
    def client_host(self) -> str:
        # uvicorn has already applied X-Forwarded-For from trusted proxies
        # (FORWARDED_ALLOW_IPS), so this is the client's address behind nginx too.
        client = self.ws.client
        return client.host if client is not None else "unknown"

    def header_values(self, name: str) -> list[str]:
        return self.ws.headers.getlist(name)

    def query_value(self, name: str) -> str | None:
        return self.ws.query_params.get(name)


class WebSocketEndpoint:
    """``/ws`` and the dedicated ``/ws/<subscription_type>`` endpoints."""

    def __init__(
        self,
        *,
        settings: Settings,
        hub: Hub,
        admission: Admission,
        sessions: Sessions,
        durable: DurableSessions,
        requests: RequestHandler,
        stats: ServiceStats,
        on_slow_consumer: Callable[[Connection], None],
        on_shutdown: Callable[[Connection], None],
        preset: SubscriptionType | None = None,
        deflate: SharedDeflate | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.admission = admission
        self.sessions = sessions
        self.durable = durable
        self.requests = requests
        self.stats = stats
        self.on_slow_consumer = on_slow_consumer
        #: Graceful shutdown of one connection (``connection_status`` closing, 1012).
        self.on_shutdown = on_shutdown
        self.preset = preset
        #: Compressed frames for connections whose transport negotiated
        #: permessage-deflate (fast path; REALTIME_COMPRESSION=shared).
        self.deflate = deflate

    async def __call__(self, websocket: WebSocket) -> None:
        hub = self.hub
        admission = self.admission
        sessions = self.sessions
        handshake = StarletteHandshake(websocket)
        # This task is the connection's: everything logged in it, from uvicorn's
        # "[accepted]" line on, carries the connection (and later user) id.
        conn_id = new_connection_id()
        bind_connection(conn_id)
        if admission.check_origin(handshake) is not None:
            # Closing before accepting answers the handshake with HTTP 403.
            await websocket.close(CloseCode.POLICY_VIOLATION)
            return
        await websocket.accept()
        try:
            user_id = _ident(websocket, "user_id")
            session_id = _ident(websocket, "session_id")
            batch = _flag(websocket, "batch")
            preset_filter = query_filters(websocket) if self.preset is not None else None
            session_request = _session_request(websocket, session_id, self.preset)
        except QueryError as exc:
            await self._refuse(websocket, CloseCode.BAD_REQUEST, str(exc), "invalid_filter")
            return
        if len(hub.connections) >= self.settings.max_connections:
            await self._refuse(
                websocket, CloseCode.TRY_AGAIN_LATER, "server at connection capacity", None
            )
            return
        try:
            ip, identity, tier, pending = admission.admit(handshake, user_id)
        except Refused as exc:
            await self._refuse(websocket, exc.code, exc.reason, exc.error_code)
            return
        if identity is not None:
            user_id = identity.user_id
        elif pending:
            user_id = None  # bound once `auth` proves who it is
        if user_id is not None:
            try:
                await sessions.reserve(user_id, conn_id)  # the limit over every instance
            except Refused as exc:
                await self._refuse(websocket, exc.code, exc.reason, exc.error_code)
                return

        fast = protocol_of(websocket.scope)
        sink: Sink = FastSink(fast) if fast is not None else AsgiSink(websocket)
        client = websocket.client
        conn = Connection(
            conn_id,
            user_id,
            session_id,
            sink,
            self.settings.outbound_buffer_bytes,
            f"{client.host}:{client.port}" if client else None,
            batch=batch,
            on_overflow=self.on_slow_consumer,
            deflate=self.deflate if fast is not None and fast.deflate else None,
        )
        if fast is not None:
            fast.on_writable = conn.writable_changed
            fast.on_lost = conn.lost
            fast.on_shutdown = lambda: self.on_shutdown(conn)
        elif isinstance(sink, AsgiSink):
            sink.start(conn)

        session = sessions.open(
            conn,
            ip,
            identity,
            tier,
            pending,
            on_authenticated=(
                (lambda msg: self._start(conn, preset_filter, _auth_session(msg, session_request)))
                if pending
                else None
            ),
        )
        hub.add(conn)
        bind_connection(conn)
        if fast is not None:
            # Acks handled in the read callback run in this task's context, so what
            # they log carries the connection like the receive loop's lines (the read
            # callback's own context is the loop's, or whichever last resumed reading).
            context = contextvars.copy_context()
            fast.on_text = lambda text: context.run(self._text_now, conn, text)
        log.info(
            "connection opened",
            extra={"path": websocket.scope["path"], "client_addr": conn.client_addr},
        )
        code: int = CloseCode.ABNORMAL
        try:
            if not session.pending:
                await self._start(conn, preset_filter, session_request)
            if fast is not None:
                # The handshake is over (origin, token and admission read the request):
                # its headers (~1-2 KB for a browser) and query string (the token) would
                # otherwise stay in the scope for the connection's lifetime, and the
                # WebSocket object with its parsed copies. Only on our own layer, where
                # no host app's middleware may still read them.
                scope = websocket.scope
                scope["headers"].clear()
                scope["query_string"] = b""
                receive: Callable[[], Awaitable[Any]] = fast.receive
                del websocket, scope, handshake
            else:
                receive = websocket.receive
            code = await self._receive_loop(receive, conn)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not (isinstance(sink, AsgiSink) and sink.aborted and task is not None):
                raise
            task.uncancel()
            code = CloseCode.SLOW_CONSUMER
        finally:
            sessions.close(conn)
            hub.remove(conn, code)
            if isinstance(sink, AsgiSink):
                await sink.stop()
            if conn.durable is not None:
                await self.durable.close(conn)
            log.info(
                "connection closed",
                extra={
                    "code": code,
                    "duration_seconds": round(time.monotonic() - conn.connected_mono, 3),
                    "messages_sent": conn.messages_sent,
                    "messages_received": conn.messages_received,
                },
            )

    async def _start(
        self,
        conn: Connection,
        preset_filter: SubscriptionFilter | None,
        session_request: SessionRequest | None,
    ) -> None:
        """Once the connection may receive: its durable session, the preset
        subscription, then ``connected``, then what a resumed session restores."""
        hub = self.hub
        session_info: dict[str, Any] | None = None
        if session_request is not None:
            identity = conn.session.identity if conn.session is not None else None
            owner = identity.user_id if identity is not None else None
            try:
                session_info = await self.durable.open(conn, session_request, owner)
            except SessionRefused as exc:
                hub.send_payload(conn, proto.error_reply(ProtocolError(exc.error_code, exc.reason)))
                conn.close(exc.code, exc.reason[:120])
                return
        if self.preset is not None:
            assert preset_filter is not None
            try:
                self.sessions.subscribe(conn, self.preset, preset_filter, None)
            except ProtocolError as exc:
                hub.send_payload(conn, proto.error_reply(exc))
                code = CloseCode.FORBIDDEN if exc.code == "forbidden" else CloseCode.BAD_REQUEST
                conn.close(code, exc.message[:120])
                return
        hub.send_payload(conn, self._connected_message(conn, session_info))
        if session_info is not None and session_info["resumed"]:
            try:
                await self.durable.restore(conn)
            except ProtocolError as exc:  # the broker went away meanwhile
                hub.send_payload(conn, proto.error_reply(exc))
                conn.close(CloseCode.TRY_AGAIN_LATER, exc.message[:120])

    def _connected_message(
        self, conn: Connection, session_info: dict[str, Any] | None = None
    ) -> bytes:
        extra = {"session": session_info} if session_info is not None else {}
        return server_message(
            EventType.CONNECTION_STATUS,
            {
                "status": "connected",
                "connection_id": conn.id,
                "user_id": conn.user_id,
                "session_id": conn.session_id,
                "subscriptions": [s.describe() for s in conn.subscriptions.values()],
                **(conn.session.describe() if conn.session is not None else {}),
                "heartbeat_interval": self.settings.heartbeat_interval,
                "server_time": utc_now_iso(),
                "instance_id": self.settings.instance_id,
                **extra,
            },
        )

    async def _refuse(
        self, websocket: WebSocket, code: CloseCode, reason: str, error_code: str | None
    ) -> None:
        if error_code is not None:
            reply = proto.error_reply(ProtocolError(error_code, reason))
            await websocket.send_text(reply.decode())
        await websocket.close(code, reason[:120])

    async def _receive_loop(self, receive: Callable[[], Awaitable[Any]], conn: Connection) -> int:
        stats = self.stats
        handle = self.requests.handle
        while True:
            try:
                message = await receive()
            except WebSocketDisconnect as exc:  # pragma: no cover - defensive
                return exc.code
            if message["type"] == "websocket.disconnect":
                return disconnect_code(message)
            text = message.get("text")
            if text is None:
                stats.errors_by_code["unsupported_data"] += 1
                conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
                continue
            if self._admit(conn, text):
                await handle(conn, text)

    def _admit(self, conn: Connection, text: str) -> bool:
        """Count a text message and apply the rate limit: False when it is dropped
        (answered ``rate_limited``, or the connection is closing)."""
        conn.messages_received += 1
        # Bytes, not characters; ``isascii`` is a flag read, and JSON is mostly ASCII.
        size = len(text) if text.isascii() else len(text.encode())
        conn.bytes_received += size
        self.stats.record_received(size)
        return not conn.closing and self.sessions.admit_message(conn)

    def _text_now(self, conn: Connection, text: str) -> bool:
        """The fast path's ``on_text``: an ``ack`` is handled right in the server's
        read callback, with no wake-up of the connection's task (acks are most of
        what clients send, and need no await); it is counted, rate-limited and
        answered exactly as through the receive loop. Anything else: False, it goes
        through the receive loop."""
        msg = proto.parse_ack(text)
        if msg is None:
            return False
        if self._admit(conn, text):
            self.requests.ack(conn, msg)
        return True
