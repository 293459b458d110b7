"""The connection manager: connections, users, rooms, and fan-out (seed: WebSocket连接管理器).

Fan-out path: a broker hands :meth:`Hub.deliver` one published event; the
subscription index yields the matching subscriptions; the event's bytes (one
serialisation, one frame) go to each matching connection once via
:meth:`Connection.send`, which never waits on a client.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from ..brokers.base import PublishedEvent
from ..core.conflation import conflation_key
from ..core.encoding import server_message
from ..core.events import EventType, SubscriptionType
from ..core.protocol import ProtocolError
from ..core.subscriptions import (
    EventAttributes,
    Subscription,
    SubscriptionFilter,
    SubscriptionIndex,
    effective_event_types,
)
from ..stats import ServiceStats
from .connection import Connection, Encoded
from .timed_views import TimedViews

log = logging.getLogger("football_realtime.hub")


class Hub:
    def __init__(
        self,
        stats: ServiceStats,
        *,
        max_subscriptions: int,
        max_rooms: int,
        render_view: Callable[[PublishedEvent, Hashable], Encoded | None] | None = None,
        on_membership: Callable[[Connection, bool], None] | None = None,
        connections: dict[str, Connection] | None = None,
        timing: TimedViews | None = None,
    ) -> None:
        """``render_view`` renders a published event for one view (e.g. a tier): the
        bytes that view receives, or None when it may not receive the event at all;
        called at most once per (event, view); connections whose ``view`` is None get
        the event as published. ``on_membership`` is told of every connection added
        (True) or removed (False): the cluster registry. ``connections``: the table to
        keep them in, when another component reads it too (the registry). ``timing``:
        the views that get some streams late or thinned (tier timeliness); their events
        go through its delay lines and come back to :meth:`release`."""
        self.stats = stats
        self.max_subscriptions = max_subscriptions
        self.max_rooms = max_rooms
        self.connections: dict[str, Connection] = connections if connections is not None else {}
        self.user_connections: dict[str, set[str]] = {}
        self.rooms: dict[str, set[str]] = {}
        self.index = SubscriptionIndex()
        self._seq = itertools.count(1)
        self._sub_ids = itertools.count(1)
        self.render_view = render_view
        self.on_membership = on_membership
        self.timing = timing
        #: The subscriptions of each timed view's connections, also in ``index``: a
        #: released event walks only its view's (the other tiers pay nothing for it).
        self.view_index: dict[Hashable, SubscriptionIndex] = (
            {} if timing is None else {v: SubscriptionIndex() for v in timing.views}
        )
        #: Per stream, the newest offset this instance fanned out (what an ``ack`` may
        #: reach, with a connection's replay: ``Connection.floors``).
        self.tops: dict[SubscriptionType, int] = {}

    # -- connections -------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        conn.stats = self.stats
        if conn.user_id is not None:
            self.user_connections.setdefault(conn.user_id, set()).add(conn.id)
        self.stats.connections_opened += 1
        if self.on_membership is not None:
            self.on_membership(conn, True)

    def bind_user(self, conn: Connection, user_id: str) -> None:
        """Attach a user to a connection that authenticated after connecting."""
        if conn.user_id == user_id:
            return
        self._unlink_user(conn)
        conn.user_id = user_id
        if conn.id in self.connections:
            self.user_connections.setdefault(user_id, set()).add(conn.id)

    def _unlink_user(self, conn: Connection) -> None:
        if conn.user_id is not None:
            ids = self.user_connections.get(conn.user_id)
            if ids is not None:
                ids.discard(conn.id)
                if not ids:
                    del self.user_connections[conn.user_id]

    def remove(self, conn: Connection, code: int) -> None:
        """Forget a connection that has gone: its subscriptions, rooms and user entry."""
        if self.connections.pop(conn.id, None) is None:
            return
        conn.closing = True
        conn.notify_drained()
        for sub in conn.subscriptions.values():
            self._unindex(sub)
        conn.subscriptions.clear()
        if conn.rooms:
            for room in conn.rooms:
                members = self.rooms.get(room)
                if members is not None:
                    members.discard(conn.id)
                    if not members:
                        del self.rooms[room]
            conn.rooms = None
        self._unlink_user(conn)
        conn.out.clear()
        self.stats.record_close(code, time.monotonic() - conn.connected_mono)
        if self.on_membership is not None:
            self.on_membership(conn, False)

    # -- subscriptions -----------------------------------------------------------

    def _index(self, sub: Subscription) -> None:
        self.index.add(sub)
        if self.view_index:
            owned = self.view_index.get(sub.owner.view)
            if owned is not None:
                owned.add(sub)

    def _unindex(self, sub: Subscription) -> None:
        self.index.remove(sub)
        if self.view_index:
            owned = self.view_index.get(sub.owner.view)
            if owned is not None:
                owned.remove(sub)

    def set_view(self, conn: Connection, view: Hashable | None) -> None:
        """The connection's tier view (None: unrestricted), e.g. after a tier change."""
        if conn.view == view:
            return
        subs = list(conn.subscriptions.values())
        for sub in subs:
            self._unindex(sub)
        old, conn.view = conn.view, view
        for sub in subs:
            self._index(sub)
        timing = self.timing
        if timing is None:
            return
        streams = {st for sub in subs for st in sub.streams}
        for st in sorted(streams):
            if timing.rules(view, st) is not None:
                # Into a delayed view: what it releases later, this connection has had.
                conn.floors[st] = max(conn.floors.get(st, 0), self.tops.get(st, 0))
            elif timing.rules(old, st) is not None:
                # Out of one: what still waits in the old view's line is due now.
                for ev in timing.waiting(old, st):
                    if ev.offset <= conn.floors.get(st, 0):
                        continue
                    attrs = EventAttributes.of(ev.event_type, ev.data)
                    if any(sub.matches(attrs) for sub in subs if st in sub.streams):
                        self.send_event(conn, ev)

    def subscribe(
        self,
        conn: Connection,
        subscription_type: SubscriptionType | None,
        flt: SubscriptionFilter,
        msg_id: Any = None,
        event_types: frozenset[EventType] | None = None,
    ) -> Subscription:
        """``event_types``: the covered types when the caller already narrowed them
        (tier policy); otherwise derived from the type and the filter."""
        if len(conn.subscriptions) >= self.max_subscriptions:
            raise ProtocolError(
                "limit_exceeded",
                f"a connection may hold at most {self.max_subscriptions} subscriptions",
                msg_id,
                "subscribe",
            )
        if event_types is None:
            try:
                event_types = effective_event_types(subscription_type, flt)
            except ValueError as exc:
                raise ProtocolError("invalid_filter", str(exc), msg_id, "subscribe") from None
        sub = Subscription(f"sub_{next(self._sub_ids)}", conn, subscription_type, event_types, flt)
        conn.subscriptions[sub.id] = sub
        self._index(sub)
        return sub

    def unsubscribe(
        self,
        conn: Connection,
        subscription_id: str | None,
        subscription_type: SubscriptionType | None,
        msg_id: Any = None,
    ) -> list[Subscription]:
        if subscription_id is not None:
            sub = conn.subscriptions.get(subscription_id)
            if sub is None or (
                subscription_type is not None and sub.subscription_type != subscription_type
            ):
                raise ProtocolError(
                    "not_found",
                    f"no subscription {subscription_id!r} on this connection",
                    msg_id,
                    "unsubscribe",
                )
            removed = [sub]
        else:
            removed = [
                s for s in conn.subscriptions.values() if s.subscription_type == subscription_type
            ]
            if not removed:
                assert subscription_type is not None
                raise ProtocolError(
                    "not_found",
                    f"no {subscription_type.value} subscription on this connection",
                    msg_id,
                    "unsubscribe",
                )
        for sub in removed:
            del conn.subscriptions[sub.id]
            self._unindex(sub)
        return removed

    def narrow_subscriptions(
        self, conn: Connection, allowed: frozenset[EventType]
    ) -> tuple[list[Subscription], list[Subscription]]:
        """Restrict a connection's subscriptions to ``allowed`` (e.g. after a tier
        downgrade): returns (removed, narrowed)."""
        removed: list[Subscription] = []
        narrowed: list[Subscription] = []
        for sub in list(conn.subscriptions.values()):
            keep = sub.event_types & allowed
            if keep == sub.event_types:
                continue
            self._unindex(sub)
            if keep:
                sub.event_types = keep
                self._index(sub)
                narrowed.append(sub)
            else:
                del conn.subscriptions[sub.id]
                removed.append(sub)
        return removed, narrowed

    def notify_user_subscriptions(
        self, conn: Connection, action: str, subs: Iterable[Subscription]
    ) -> None:
        """``user_subscription_changed`` to every connection of the user who changed."""
        if conn.user_id is None:
            return
        ids = self.user_connections.get(conn.user_id)
        if not ids:
            return
        current = [s.describe() for s in conn.subscriptions.values()]
        for sub in subs:
            described = next((d for d in current if d["subscription_id"] == sub.id), None)
            enc = Encoded(
                server_message(
                    EventType.USER_SUBSCRIPTION_CHANGED,
                    {
                        "user_id": conn.user_id,
                        "connection_id": conn.id,
                        "action": action,
                        "subscription_id": sub.id,
                        "subscription": described if described is not None else sub.describe(),
                        "subscriptions": current,
                    },
                )
            )
            for cid in ids:
                target = self.connections.get(cid)
                if target is not None:
                    self._send(target, enc)

    def announce_restored(self, conn: Connection, sub: Subscription, extra: dict[str, Any]) -> None:
        """``user_subscription_changed`` for a subscription a resumed session restored
        (``restored: true`` plus ``extra``: streams, recovered, reason): to every
        connection of the user, or to the connection itself when it is anonymous."""
        current = [s.describe() for s in conn.subscriptions.values()]
        enc = Encoded(
            server_message(
                EventType.USER_SUBSCRIPTION_CHANGED,
                {
                    "user_id": conn.user_id,
                    "connection_id": conn.id,
                    "action": "subscribed",
                    "subscription_id": sub.id,
                    "subscription": sub.describe(),
                    "subscriptions": current,
                    "restored": True,
                    **extra,
                },
            )
        )
        ids = self.user_connections.get(conn.user_id) if conn.user_id is not None else None
        for cid in ids or (conn.id,):
            target = self.connections.get(cid)
            if target is not None:
                self._send(target, enc)

    # -- rooms -------------------------------------------------------------------

    def join(self, conn: Connection, room: str, msg_id: Any = None) -> None:
        if conn.rooms is None:
            conn.rooms = set()
        if room in conn.rooms:
            return
        if len(conn.rooms) >= self.max_rooms:
            raise ProtocolError(
                "limit_exceeded",
                f"a connection may join at most {self.max_rooms} rooms",
                msg_id,
                "join",
            )
        conn.rooms.add(room)
        self.rooms.setdefault(room, set()).add(conn.id)

    def leave(self, conn: Connection, room: str, msg_id: Any = None) -> None:
        if not conn.rooms or room not in conn.rooms:
            raise ProtocolError("not_found", f"not in room {room!r}", msg_id, "leave")
        conn.rooms.discard(room)
        members = self.rooms[room]
        members.discard(conn.id)
        if not members:
            del self.rooms[room]

    # -- sending -----------------------------------------------------------------

    def _send(self, conn: Connection, enc: Encoded) -> bool:
        if conn.send(enc):
            self.stats.messages_sent += 1
            self.stats.bytes_sent += len(enc.payload)
            return True
        return False

    def send_payload(self, conn: Connection, payload: bytes) -> bool:
        """A connection-level message (reply, status) to one connection."""
        return self._send(conn, Encoded(payload))

    def deliver(self, ev: PublishedEvent) -> int:
        """Fan one published event out to every matching connection, once each.

        Serialised once per view (usually one); never awaits a client.
        """
        attrs = EventAttributes.of(ev.event_type, ev.data)
        self.tops[ev.stream] = ev.offset
        key = conflation_key(ev.event_type, ev.data)
        enc = Encoded(ev.payload)
        views: dict[Hashable, Encoded | None] | None = None
        timing = self.timing
        if timing is not None:
            timed = timing.by_stream.get(ev.stream)
            if timed:
                # Every event a timed view may see enters its line, subscribed or not;
                # None here: the view's connections get it later, from release().
                views = {}
                for name in timed:
                    venc = self._render(ev, name)
                    views[name] = (
                        None if venc is None or timing.hold(ev, name, venc, self.release) else venc
                    )
        stamp = next(self._seq)
        n = 0
        for group in self.index.match_groups(attrs):
            for sub in group:
                conn: Connection = sub.owner
                if conn.stamp == stamp:
                    continue
                conn.stamp = stamp
                if ev.offset <= conn.floors.get(ev.stream, 0):
                    continue  # from before this connection's subscription to the stream
                view = conn.view
                if view is None:
                    if conn.held is not None:
                        conn.held.append(ev)
                    elif conn.send(enc, key):
                        n += 1
                    continue
                if views is None:
                    views = {}
                if view in views:
                    venc = views[view]
                else:
                    venc = views[view] = self._render(ev, view)
                if venc is None:
                    continue  # not for this view, or not yet (timed)
                if conn.held is not None:
                    conn.held.append(ev)
                elif conn.send(venc, key):
                    n += 1
        self._count(ev, n)
        return n

    def release(self, ev: PublishedEvent, view: Hashable, enc: Encoded) -> int:
        """A timed view's event, now due: to that view's matching connections."""
        attrs = EventAttributes.of(ev.event_type, ev.data)
        key = conflation_key(ev.event_type, ev.data)
        stamp = next(self._seq)
        n = 0
        owned = self.view_index.get(view)
        if owned is None:
            return 0
        for group in owned.match_groups(attrs):
            for sub in group:
                conn: Connection = sub.owner
                if conn.stamp == stamp:
                    continue
                conn.stamp = stamp
                if ev.offset <= conn.floors.get(ev.stream, 0):
                    continue
                if conn.held is not None:
                    conn.held.append(ev)
                elif conn.send(enc, key):
                    n += 1
        self._count(ev, n)
        return n

    def _count(self, ev: PublishedEvent, n: int) -> None:
        st = self.stats
        st.messages_sent += n
        st.bytes_sent += n * len(ev.payload)
        st.delivered_by_type[ev.event_type] += n

    def _render(self, ev: PublishedEvent, view: Hashable) -> Encoded | None:
        render = self.render_view
        return Encoded(ev.payload) if render is None else render(ev, view)

    def send_event(self, conn: Connection, ev: PublishedEvent) -> bool:
        """One published event to one connection (replay, snapshot), through its view."""
        enc = Encoded(ev.payload) if conn.view is None else self._render(ev, conn.view)
        if enc is None:
            return False
        if conn.send(enc, conflation_key(ev.event_type, ev.data)):
            st = self.stats
            st.messages_sent += 1
            st.bytes_sent += len(enc.payload)
            st.delivered_by_type[ev.event_type] += 1
            return True
        return False

    def send_event_many(self, conn_ids: Iterable[str], ev: PublishedEvent) -> int:
        """One event to the given connections regardless of subscriptions, each
        through its view (a targeted send never bypasses the tier policy)."""
        views: dict[Hashable, Encoded | None] = {}
        plain = Encoded(ev.payload)
        timing = self.timing
        later: dict[Hashable, list[Connection]] = {}
        n = 0
        for cid in list(conn_ids):
            conn = self.connections.get(cid)
            if conn is None:
                continue
            view = conn.view
            if view is None:
                enc: Encoded | None = plain
            elif view in views:
                enc = views[view]
            else:
                enc = views[view] = self._render(ev, view)
            if enc is None:
                continue
            if timing is not None and timing.direct_delay(view, ev) > 0:
                later.setdefault(view, []).append(conn)
            elif self._send(conn, enc):
                n += 1
        if timing is not None:
            for view, conns in later.items():
                venc = views[view]
                assert venc is not None
                timing.later(timing.direct_delay(view, ev), self._sender(conns, venc))
                n += len(conns)
        return n

    def _sender(self, conns: list[Connection], enc: Encoded) -> Callable[[], None]:
        def send() -> None:
            for conn in conns:
                if not conn.closing:
                    self._send(conn, enc)

        return send


def new_connection_id() -> str:
    return "c_" + secrets.token_urlsafe(12)
