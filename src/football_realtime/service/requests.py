"""Client requests: one reply to every message a client sends (docs/protocol.md).

The WebSocket endpoint hands each text message here after the rate limit; the
message is parsed by ``core.protocol`` and acted on through the hub, the sessions
(``auth``) and recovery (``subscribe``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..core import protocol as proto
from ..core.events import utc_now_iso
from ..core.protocol import ProtocolError
from ..stats import ServiceStats
from .connection import Connection
from .durable_sessions import DurableSessions
from .hub import Hub
from .recovery import Recovery
from .sessions import Sessions

log = logging.getLogger("football_realtime.transport")


class RequestHandler:
    def __init__(
        self,
        hub: Hub,
        sessions: Sessions,
        recovery: Recovery,
        durable: DurableSessions,
        stats: ServiceStats,
        server_stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.hub = hub
        self.sessions = sessions
        self.recovery = recovery
        self.durable = durable
        self.stats = stats
        #: The server's figures for ``get_stats`` (what /realtime/stats shows).
        self.server_stats = server_stats

    def ack(self, conn: Connection, msg: proto.Ack) -> None:
        """A parsed ``ack``, as ``handle`` acts on it: no reply when valid, else an
        ``error`` (``invalid_ack``). Never awaits, so the server's read callback may
        call it (``edges/websocket.py``, the fast path)."""
        self.stats.received_by_type[msg.type] += 1
        session = conn.session
        if session is not None and session.pending:
            self.sessions.refuse_unauthenticated(conn, f"got {msg.type!r} before auth")
            return
        try:
            self.durable.ack(conn, msg)
        except ProtocolError as exc:
            self.stats.errors_by_code[exc.code] += 1
            self.hub.send_payload(conn, proto.error_reply(exc))
        except Exception:
            self._internal_error(conn, msg)

    async def handle(self, conn: Connection, text: str) -> None:
        """Parse one client message, act on it, and send exactly one reply (none for a
        valid ``ack``)."""
        hub = self.hub
        msg: proto.ClientMessage | None = None
        session = conn.session
        try:
            msg = proto.parse_client_message(text)
            if isinstance(msg, proto.Ack):
                self.ack(conn, msg)
                return
            self.stats.received_by_type[msg.type] += 1
            if isinstance(msg, proto.Auth):
                await self.sessions.handle_auth(conn, msg)
                return
            if session is not None and session.pending:
                self.sessions.refuse_unauthenticated(conn, f"got {msg.type!r} before auth")
                return
            if isinstance(msg, proto.Subscribe):
                self.durable.check_subscribe(conn, msg)
                sub, start = await self.recovery.subscribe(conn, msg)
                await self.durable.subscribed(conn, sub, start)
                return
            if isinstance(msg, proto.Unsubscribe):
                removed = hub.unsubscribe(conn, msg.subscription_id, msg.subscription_type, msg.id)
                reply = proto.ack(
                    msg.id,
                    msg.type,
                    {
                        "removed": [s.describe() for s in removed],
                        "subscriptions": [s.describe() for s in conn.subscriptions.values()],
                    },
                )
                hub.send_payload(conn, reply)
                hub.notify_user_subscriptions(conn, "unsubscribed", removed)
                await self.durable.unsubscribed(conn, removed)
                return
            elif isinstance(msg, proto.Heartbeat):
                reply = proto.ack(msg.id, msg.type, {"server_time": utc_now_iso()})
            elif isinstance(msg, proto.GetStats):
                reply = proto.ack(
                    msg.id, msg.type, {"connection": conn.describe(), "server": self.server_stats()}
                )
            elif isinstance(msg, proto.Join):
                hub.join(conn, msg.room, msg.id)
                reply = proto.ack(
                    msg.id, msg.type, {"room": msg.room, "rooms": sorted(conn.rooms or ())}
                )
            else:
                hub.leave(conn, msg.room, msg.id)
                reply = proto.ack(
                    msg.id, msg.type, {"room": msg.room, "rooms": sorted(conn.rooms or ())}
                )
            hub.send_payload(conn, reply)
        except ProtocolError as exc:
            if session is not None and session.pending:
                self.sessions.refuse_unauthenticated(conn, exc.message)
                return
            self.stats.errors_by_code[exc.code] += 1
            hub.send_payload(conn, proto.error_reply(exc))
        except Exception:
            self._internal_error(conn, msg)

    def _internal_error(self, conn: Connection, msg: proto.ClientMessage | None) -> None:
        log.exception("request failed on connection %s", conn.id)
        self.stats.errors_by_code["internal_error"] += 1
        self.hub.send_payload(
            conn,
            proto.error_reply(
                ProtocolError(
                    "internal_error",
                    "the server failed to handle this",
                    msg.id if msg is not None else None,
                    msg.type if msg is not None else None,
                )
            ),
        )


__all__ = ["RequestHandler"]
