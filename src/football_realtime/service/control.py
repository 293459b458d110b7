"""Cluster-wide control: disconnect (and ban) a user on every instance, and the per-user
connection limit counted over every instance (docs/scaling.md, Cluster-wide control).

:class:`ClusterControl` does what the service does; where its state lives and how a
command reaches every instance is a :class:`~.control_store.ControlStore`
(:mod:`.control_store`: in this process for the memory broker, in Redis otherwise).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..core.close_codes import CloseCode
from ..core.encoding import server_message
from ..core.events import EventType
from ..stats import ServiceStats
from .admission import Refused
from .control_store import Ban, Command, ControlStore
from .hub import Hub

log = logging.getLogger("football_realtime.control")


class ClusterControl:
    """Disconnects and bans users on every instance; counts their connections over the
    cluster. ``store``: :class:`MemoryControlStore` or :class:`RedisControlStore`."""

    def __init__(
        self, instance_id: str, hub: Hub, store: ControlStore, stats: ServiceStats
    ) -> None:
        self.instance_id = instance_id
        self.hub = hub
        self.store = store
        self.stats = stats
        self.bans: dict[str, Ban] = {}

    async def start(self) -> None:
        for ban in await self.store.start(self.apply):
            self._record(ban)

    async def stop(self) -> None:
        await self.store.stop()

    # -- bans ----------------------------------------------------------------------

    def ban_of(self, user_id: str) -> Ban | None:
        """The user's current ban, or None."""
        ban = self.bans.get(user_id)
        if ban is None:
            return None
        if ban.until <= time.time():
            del self.bans[user_id]
            return None
        return ban

    def banned(self, user_id: str) -> str | None:
        """Why ``user_id`` may not connect now (admission's refusal reason), or None."""
        ban = self.ban_of(user_id)
        if ban is None:
            return None
        left = max(1, round(ban.until - time.time()))
        why = f": {ban.reason}" if ban.reason else ""
        return f"banned by an administrator for {left} more second(s){why}"

    def _record(self, ban: Ban) -> None:
        cur = self.bans.get(ban.user_id)
        if cur is None or cur.until < ban.until or ban.until <= time.time():
            self.bans[ban.user_id] = ban

    # -- commands ------------------------------------------------------------------

    async def disconnect(self, user_id: str, ban_seconds: float, reason: str) -> dict[str, Any]:
        """Close ``user_id``'s connections on every instance (4506), and refuse new ones
        for ``ban_seconds``. Returns what was done on this instance."""
        until = time.time() + ban_seconds if ban_seconds > 0 else None
        command: Command = {
            "op": "disconnect",
            "user_id": user_id,
            "reason": reason,
            "until": until,
            "origin": self.instance_id,
        }
        ban = Ban(user_id, until, reason) if until is not None else None
        closed = self._apply(command)  # at once here; the others hear it from the store
        await self.store.send(command, ban)
        return {"closed_here": closed, "banned_until": until}

    def apply(self, command: Command) -> None:
        """A command from the control channel (every instance's, this one's included)."""
        self._apply(command)

    def _apply(self, command: Command) -> int:
        user_id = command.get("user_id")
        if not isinstance(user_id, str):
            return 0
        until = command.get("until")
        reason = command.get("reason")
        reason = reason if isinstance(reason, str) else ""
        if isinstance(until, int | float):
            self._record(Ban(user_id, float(until), reason))
        if command.get("op") != "disconnect":
            return 0
        return self._close_user(user_id, reason)

    def _close_user(self, user_id: str, reason: str) -> int:
        hub = self.hub
        closed = 0
        why = "disconnected by an administrator" + (f": {reason}" if reason else "")
        for cid in list(hub.user_connections.get(user_id, ())):
            conn = hub.connections.get(cid)
            if conn is None or conn.closing:
                continue
            hub.send_payload(
                conn,
                server_message(
                    EventType.CONNECTION_STATUS,
                    {
                        "status": "closing",
                        "reason": why,
                        "instance_id": self.instance_id,
                        "reconnect": False,
                    },
                ),
            )
            conn.close(CloseCode.DISCONNECTED_BY_ADMIN, why[:120])
            closed += 1
        if closed:
            log.info("disconnected user %s on this instance (%d connection(s))", user_id, closed)
        return closed

    # -- per-user connections -------------------------------------------------------

    async def reserve(self, user_id: str, conn_id: str, limit: int) -> None:
        """Count a new connection of ``user_id`` over the cluster. Raises
        :class:`Refused` when the user already holds ``limit`` connections."""
        if not await self.store.reserve(user_id, conn_id, limit):
            self.stats.errors_by_code["connection_limit"] += 1
            log.info("refused connection: user %s is at its cluster-wide limit", user_id)
            raise Refused(
                CloseCode.CONNECTION_LIMIT,
                f"connection limit: at most {limit} connections per user (on every instance)",
                "limit_exceeded",
            )

    def release(self, user_id: str, conn_id: str) -> None:
        self.store.release(user_id, conn_id)


__all__ = ["ClusterControl"]
