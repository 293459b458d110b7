"""Durable sessions and acknowledgements (docs/protocol.md, Sessions and ``ack``).

Not to be confused with :mod:`.sessions` (each open connection's *security* state).

A client that connects with ``session_id=new`` (the server issues an id) or
``session_id=<id>&resume=1`` (query, or the first ``auth`` message) opens a durable
session: :class:`DurableSessions` keeps its :class:`~..core.session_state.SessionState`
(subscriptions with filters, acknowledged position per stream) in the broker's
``StoresSessions`` ability, ``REALTIME_SESSION_TTL`` seconds after its last connection
closes, so any instance sharing the broker can resume it. Resuming restores the
subscriptions through the tier checks and replays everything after the acknowledged
positions (``Recovery.restore``), then live events.

Acks (``ack`` messages) are validated against what the connection was sent, recorded
in the session in memory, and written to the broker coalesced: every
``REALTIME_SESSION_FLUSH_INTERVAL`` seconds for the sessions whose positions moved, at
once for subscription changes and when the connection closes. While its connection is
open a session's expiry is pushed forward periodically, so it outlives an instance
crash by at least the TTL.

A session is bound to the identity that created it: the JWT's user, or none
(anonymous; the id, long and random, is then the only key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..brokers.base import BrokerUnavailable, PublishedEvent, StoresSessions
from ..config import Settings
from ..core import protocol as proto
from ..core.close_codes import CloseCode
from ..core.errors import LocalError
from ..core.events import SubscriptionType
from ..core.protocol import ProtocolError
from ..core.session_state import (
    NEW_SESSION,
    InvalidState,
    SessionState,
    SubscriptionSpec,
    new_session_id,
    valid_session_id,
)
from ..core.subscriptions import Subscription, SubscriptionFilter
from ..stats import ServiceStats
from ..tasks import stop_task
from .connection import Connection
from .hub import Hub
from .recovery import Recovery

log = logging.getLogger("football_realtime.sessions")

#: Events per stream whose publish time and type this instance remembers, to time acks.
ACK_WINDOW = 4096


class SessionRefused(LocalError):
    """The session cannot be opened: answer ``error`` ``session_refused`` (or
    ``unavailable``) and close with ``code``."""

    def __init__(self, code: CloseCode, reason: str, why: str, error_code: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.why = why  # the stats label
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What the client asked for: ``session_id`` (``new`` or an id) and ``resume``."""

    session_id: str
    resume: bool

    @staticmethod
    def of(session_id: str | None, resume: bool) -> SessionRequest | None:
        """The request the connection parameters make, None for no durable session
        (``session_id`` alone, without ``resume``, stays the label it always was).
        Raises ValueError naming what is wrong."""
        if session_id is None:
            if resume:
                raise ValueError("resume needs a session_id")
            return None
        if session_id == NEW_SESSION:
            return SessionRequest(NEW_SESSION, False)
        if not resume:
            return None
        if not valid_session_id(session_id):
            raise ValueError(
                "a durable session_id is 'new' or 22-64 characters of A-Z a-z 0-9 _ - "
                "(ask for 'new' to have the server issue one)"
            )
        return SessionRequest(session_id, True)


class DurableSession:
    """One connection's open durable session."""

    __slots__ = ("dirty", "state")

    def __init__(self, state: SessionState) -> None:
        self.state = state
        self.dirty = False


class AckClock:
    """Publish time and type of the recent events of each stream on this instance, to
    time acks (``realtime_ack_latency_seconds``): one slot write per event."""

    __slots__ = ("_rings",)

    def __init__(self) -> None:
        self._rings: dict[SubscriptionType, list[tuple[int, float, str] | None]] = {
            st: [None] * ACK_WINDOW for st in SubscriptionType
        }

    def record(self, ev: PublishedEvent) -> None:
        # The type's name, not the enum: read back per ack, where ``.value`` costs.
        ring = self._rings[ev.stream]
        ring[ev.offset % ACK_WINDOW] = (ev.offset, ev.published_at, ev.event_type.value)

    def lookup(self, stream: SubscriptionType, offset: int) -> tuple[float, str] | None:
        """Publish time and event type name of ``stream``'s event at ``offset``."""
        entry = self._rings[stream][offset % ACK_WINDOW]
        if entry is None or entry[0] != offset:
            return None
        return entry[1], entry[2]


class DurableSessions:
    """Every durable session open on this instance, their storage and the acks."""

    def __init__(
        self,
        settings: Settings,
        store: StoresSessions,
        hub: Hub,
        recovery: Recovery,
        stats: ServiceStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: wall-clock seconds, for ack latency."""
        self.settings = settings
        self.store = store
        self.hub = hub
        self.recovery = recovery
        self.stats = stats
        self.clock = clock
        self.acks = AckClock()
        #: Connections with an open durable session, by connection id.
        self.open_connections: dict[str, Connection] = {}
        self._task: asyncio.Task[None] | None = None
        ttl = settings.session_ttl
        #: How often open sessions' expiry is pushed forward, and by how much more
        #: than the TTL, so that a crashed instance's sessions still live the TTL.
        self.refresh_interval = min(ttl / 3, 60.0)
        self.live_ttl = ttl + self.refresh_interval

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="durable-sessions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
        for conn in list(self.open_connections.values()):
            await self.close(conn)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_touch = loop.time() + self.refresh_interval
        while True:
            await asyncio.sleep(self.settings.session_flush_interval)
            try:
                await self.flush()
                if loop.time() >= next_touch:
                    next_touch = loop.time() + self.refresh_interval
                    await self.store.touch_sessions(
                        [
                            (c.durable.state.id, c.durable.state.owner)
                            for c in self.open_connections.values()
                            if c.durable is not None
                        ],
                        self.live_ttl,
                    )
            except BrokerUnavailable as exc:
                log.warning("could not write durable sessions: %s", exc)
            except Exception:  # pragma: no cover - logged, the loop goes on
                log.exception("durable session flush failed")

    async def flush(self) -> None:
        """Write the sessions whose acknowledged positions moved."""
        for conn in list(self.open_connections.values()):
            durable: DurableSession | None = conn.durable
            if durable is not None and durable.dirty:
                durable.dirty = False
                try:
                    await self._save(durable, self.live_ttl)
                except BrokerUnavailable:
                    durable.dirty = True
                    raise

    async def _save(self, durable: DurableSession, ttl: float) -> None:
        state = durable.state
        await self.store.save_session(state.id, state.encode(), ttl, state.owner)

    # -- opening -----------------------------------------------------------------------

    async def open(
        self, conn: Connection, request: SessionRequest, owner: str | None
    ) -> dict[str, Any]:
        """Open (or resume) the session ``request`` names for a connection of ``owner``
        (the token's user, None when anonymous). Returns the welcome's ``session``
        object; raises :class:`SessionRefused`."""
        try:
            return await self._open(conn, request, owner)
        except SessionRefused as exc:
            self.stats.sessions_refused[exc.why] += 1
            raise
        except BrokerUnavailable as exc:
            self.stats.sessions_refused["unavailable"] += 1
            raise SessionRefused(
                CloseCode.TRY_AGAIN_LATER,
                f"the broker is unavailable, retry shortly ({exc})",
                "unavailable",
                "unavailable",
            ) from None

    async def _open(
        self, conn: Connection, request: SessionRequest, owner: str | None
    ) -> dict[str, Any]:
        state: SessionState | None = None
        reason: str | None = None
        if request.session_id == NEW_SESSION:
            session_id = new_session_id()
        else:
            session_id = request.session_id
            raw = await self.store.load_session(session_id)
            if raw is not None:
                try:
                    state = SessionState.decode(session_id, raw)
                except InvalidState as exc:
                    log.warning("session %s unreadable, starting afresh: %s", session_id, exc)
                    reason = "the stored session could not be read"
            if state is not None and state.owner != owner:
                if state.owner is not None and owner is None:
                    raise SessionRefused(
                        CloseCode.UNAUTHORIZED,
                        "this session belongs to an authenticated user: connect with its token",
                        "token",
                        "session_refused",
                    )
                raise SessionRefused(
                    CloseCode.FORBIDDEN,
                    "this session belongs to another identity",
                    "owner",
                    "session_refused",
                )
            if state is None and reason is None:
                reason = "no such session (expired, or never created): a new one was opened"
                self.stats.sessions_expired += 1
        resumed = state is not None
        if state is None:
            if owner is not None:
                held = await self.store.count_sessions(owner)
                limit = self.settings.max_sessions_per_user
                if held >= limit:
                    raise SessionRefused(
                        CloseCode.FORBIDDEN,
                        f"this user holds {held} durable sessions, the most allowed "
                        f"(REALTIME_MAX_SESSIONS_PER_USER={limit}); resume one of them",
                        "limit",
                        "session_refused",
                    )
            state = SessionState(session_id, owner)
            self.stats.sessions_created += 1
        else:
            self.stats.sessions_resumed += 1
        durable = DurableSession(state)
        await self._save(durable, self.live_ttl)
        conn.durable = durable
        conn.session_id = session_id
        self.open_connections[conn.id] = conn
        out: dict[str, Any] = {
            "id": session_id,
            "resumed": resumed,
            "expires_in": self.settings.session_ttl,
        }
        if reason is not None and request.resume:
            out["reason"] = reason
        return out

    async def restore(self, conn: Connection) -> None:
        """After the welcome of a resumed session: its subscriptions back, announced,
        and every event after its acknowledged positions, then live events."""
        durable: DurableSession | None = conn.durable
        if durable is None or not durable.state.subscriptions:
            return
        state = durable.state
        specs: list[tuple[SubscriptionType | None, SubscriptionFilter]] = []
        kept: list[SubscriptionSpec] = []
        for spec in state.subscriptions.values():
            try:
                st = SubscriptionType(spec.subscription_type) if spec.subscription_type else None
                flt = proto.parse_filters(spec.filters)
            except (ValueError, ProtocolError) as exc:
                log.warning("session %s: dropping unreadable subscription: %s", state.id, exc)
                continue
            specs.append((st, flt))
            kept.append(spec)
        subs, errors, start = await self.recovery.restore(conn, specs, state.positions)
        for refusal in errors:
            self.hub.send_payload(
                conn,
                proto.error_reply(
                    ProtocolError(
                        refusal.code,
                        "a subscription of the resumed session was not restored: "
                        + refusal.message,
                        None,
                        "subscribe",
                    )
                ),
            )
        # The restored subscriptions under their new ids, in the order they were made.
        restored = {sub.id: _spec_of(sub) for sub in subs}
        state.subscriptions = restored
        state.positions = dict(start)
        await self._save(durable, self.live_ttl)

    # -- subscriptions -----------------------------------------------------------------

    def check_subscribe(self, conn: Connection, msg: proto.Subscribe) -> None:
        """Before a subscribe of a connection with a session: the session's bounds."""
        durable: DurableSession | None = conn.durable
        if durable is None:
            return
        state = durable.state
        s = self.settings
        if len(state.subscriptions) >= s.session_max_subscriptions:
            raise ProtocolError(
                "limit_exceeded",
                f"a durable session may hold at most {s.session_max_subscriptions} "
                "subscriptions (REALTIME_SESSION_MAX_SUBSCRIPTIONS)",
                msg.id,
                msg.type,
            )
        spec = SubscriptionSpec(
            msg.subscription_type.value if msg.subscription_type else None,
            msg.filters.to_wire(),
        )
        size = state.size_with(spec) + 64 * len(SubscriptionType)  # room for positions
        if size > s.session_max_bytes:
            raise ProtocolError(
                "limit_exceeded",
                f"the durable session would hold {size} bytes, more than "
                f"{s.session_max_bytes} (REALTIME_SESSION_MAX_BYTES)",
                msg.id,
                msg.type,
            )

    async def subscribed(
        self,
        conn: Connection,
        sub: Subscription,
        start: dict[SubscriptionType, tuple[str, int]],
    ) -> None:
        """A subscribe succeeded: remember it and where its streams start."""
        durable: DurableSession | None = conn.durable
        if durable is None:
            return
        state = durable.state
        state.subscriptions[sub.id] = _spec_of(sub)
        for st, (epoch, offset) in start.items():
            state.start_stream(st, epoch, offset)
        await self._save_soon(durable)

    async def unsubscribed(self, conn: Connection, removed: list[Subscription]) -> None:
        durable: DurableSession | None = conn.durable
        if durable is None or not removed:
            return
        state = durable.state
        for sub in removed:
            state.subscriptions.pop(sub.id, None)
        state.streams_in_use({st for sub in conn.subscriptions.values() for st in sub.streams})
        await self._save_soon(durable)

    async def _save_soon(self, durable: DurableSession) -> None:
        """Subscription changes are written at once (the broker being down only delays
        it to the next flush)."""
        try:
            await self._save(durable, self.live_ttl)
            durable.dirty = False
        except BrokerUnavailable as exc:
            durable.dirty = True
            log.warning("session %s not written yet: %s", durable.state.id, exc)

    # -- acks --------------------------------------------------------------------------

    def ack(self, conn: Connection, msg: proto.Ack) -> None:
        """Validate an ``ack`` (all positions, before any is taken) and record it.
        Raises ``invalid_ack``. Runs for most messages clients send, in the read
        callback: each line here is paid per ack (docs/performance.md)."""
        positions = msg.positions
        subs = conn.subscriptions.values()
        tops = self.hub.tops
        for st, (epoch, offset) in positions.items():
            for sub in subs:
                if st in sub.streams:
                    break
            else:
                raise ProtocolError(
                    "invalid_ack",
                    f"positions.{st.value}: no subscription of this connection covers this stream",
                    msg.id,
                    msg.type,
                )
            current = conn.epochs.get(st)
            if epoch != current:
                raise ProtocolError(
                    "invalid_ack",
                    f"positions.{st.value}: epoch {epoch[:64]!r} is not the stream's "
                    f"current epoch {current!r}",
                    msg.id,
                    msg.type,
                )
            if offset > tops.get(st, 0) and offset > conn.floors.get(st, 0):
                sent = max(tops.get(st, 0), conn.floors.get(st, 0))
                raise ProtocolError(
                    "invalid_ack",
                    f"positions.{st.value}: offset {offset} is ahead of what was sent "
                    f"on this stream ({sent})",
                    msg.id,
                    msg.type,
                )
        durable: DurableSession | None = conn.durable
        if durable is not None:
            state = durable.state
            moved = False
            for st, (epoch, offset) in positions.items():
                if state.acknowledge(st, epoch, offset):
                    moved = True
                    self._time_ack(st, offset)
            if moved:
                durable.dirty = True
        else:
            for st, (_, offset) in positions.items():
                self._time_ack(st, offset)

    def _time_ack(self, stream: SubscriptionType, offset: int) -> None:
        seen = self.acks.lookup(stream, offset)
        if seen is not None and seen[0] > 0:
            self.stats.record_ack_latency(seen[1], self.clock() - seen[0])

    # -- closing -----------------------------------------------------------------------

    async def close(self, conn: Connection) -> None:
        """The connection is gone: write its session with the TTL starting now."""
        if self.open_connections.pop(conn.id, None) is None:
            return
        durable: DurableSession | None = conn.durable
        if durable is None:
            return
        with contextlib.suppress(BrokerUnavailable):
            await self._save(durable, self.settings.session_ttl)

    # -- observation -------------------------------------------------------------------

    def unacked_offsets(self) -> int:
        """Over the open sessions, how far each stream's acknowledged position is behind
        the newest offset this instance delivered (an upper bound on events sent and
        not yet acknowledged: offsets the filters skipped count too)."""
        tops = self.hub.tops
        total = 0
        for conn in self.open_connections.values():
            durable: DurableSession | None = conn.durable
            if durable is None:
                continue
            for st, (epoch, offset) in durable.state.positions.items():
                if conn.epochs.get(st) == epoch:
                    total += max(0, tops.get(st, 0) - offset)
        return total


def _spec_of(sub: Subscription) -> SubscriptionSpec:
    return SubscriptionSpec(
        sub.subscription_type.value if sub.subscription_type else None, sub.filters.to_wire()
    )


__all__ = [
    "AckClock",
    "DurableSession",
    "DurableSessions",
    "SessionRefused",
    "SessionRequest",
]
