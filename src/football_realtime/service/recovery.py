"""Subscribe with recovery (``since``) and snapshots, without gaps or duplicates.

While a subscription is being set up with ``since`` or ``snapshot``, the
connection's live events are held (``Connection.held``). The server then reads
the broker's history (or snapshot), merges it with the held events per stream
by offset, drops what the client already has and duplicates, and sends the
result paced by what the socket takes. Only then does live delivery resume; the
switch happens without an await, so no event falls between the two.

Recovery is all or nothing (never a partial replay): if any stream's history
no longer reaches the client's offset, or its epoch changed, the ack says
``recovered: false`` with a ``reason`` and nothing is replayed.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ..brokers.base import Broker, BrokerUnavailable, PublishedEvent
from ..core import protocol as proto
from ..core.close_codes import CloseCode
from ..core.events import SubscriptionType
from ..core.protocol import ProtocolError
from ..core.subscriptions import EventAttributes, Subscription
from ..stats import ServiceStats
from .hub import Hub

if TYPE_CHECKING:
    from .connection import Connection
    from .sessions import Sessions

#: Live events a connection may accumulate while its replay is sent; past this the
#: client is too slow to catch up and is asked to reconnect and recover (4002).
MAX_HELD = 20_000


def _matching(sub: Subscription, events: list[PublishedEvent]) -> list[PublishedEvent]:
    return [ev for ev in events if sub.matches(EventAttributes.of(ev.event_type, ev.data))]


class Recovery:
    """``subscribe`` requests: the subscription within the connection's tier, its ack
    with stream positions, and the replay (``since``) or snapshot that goes with it."""

    def __init__(self, broker: Broker, hub: Hub, sessions: Sessions, stats: ServiceStats) -> None:
        self.broker = broker
        self.hub = hub
        self.sessions = sessions
        self.stats = stats

    async def subscribe(self, conn: Connection, msg: proto.Subscribe) -> None:
        hub = self.hub
        broker = self.broker
        stats = self.stats
        sub = self.sessions.subscribe(conn, msg.subscription_type, msg.filters, msg.id)
        streams = sub.streams
        since = msg.since
        if since is not None:
            foreign = [st.value for st in since if st not in streams]
            if foreign:
                hub.unsubscribe(conn, sub.id, None)
                raise ProtocolError(
                    "invalid_since",
                    f"since names stream(s) this subscription does not cover: {', '.join(foreign)}",
                    msg.id,
                    msg.type,
                )
        hold = since is not None or msg.snapshot
        if hold:
            conn.held = []
        try:
            result = sub.describe()
            positions: dict[SubscriptionType, tuple[str, int]] = {}
            for st in streams:
                positions[st] = await broker.position(st)
            result["streams"] = {
                st.value: {"epoch": e, "offset": o} for st, (e, o) in positions.items()
            }
            for st, (e, _) in positions.items():
                conn.epochs[st] = e
            backlog: list[PublishedEvent] = []
            recovered = False
            if since is not None:
                reasons: list[str] = []
                replay: list[PublishedEvent] = []
                for st, pos in since.items():
                    epoch, top = positions[st]
                    if pos.epoch != epoch:
                        reasons.append(f"{st.value}: epoch changed (history was lost)")
                        continue
                    if pos.offset > top:
                        reasons.append(
                            f"{st.value}: offset {pos.offset} is ahead of the stream ({top})"
                        )
                        continue
                    events = await broker.history(st, pos.offset)
                    if events is None:
                        reasons.append(
                            f"{st.value}: history no longer reaches back to offset {pos.offset + 1}"
                        )
                        continue
                    replay.extend(_matching(sub, events))
                recovered = not reasons
                result["recovered"] = recovered
                if recovered:
                    backlog = replay
                    stats.recoveries += 1
                else:
                    result["reason"] = "; ".join(reasons)
                    stats.recoveries_failed += 1
            if msg.snapshot and not recovered:
                for st in streams:
                    backlog.extend(_matching(sub, await broker.snapshot(st)))
            hub.send_payload(conn, proto.ack(msg.id, msg.type, result))
            hub.notify_user_subscriptions(conn, "subscribed", (sub,))
            if hold:
                floor = {st: pos.offset for st, pos in since.items()} if recovered and since else {}
                sent = await _send_merged(hub, conn, backlog, floor)
                if recovered:
                    stats.replayed_events += sent
                elif msg.snapshot:
                    stats.snapshot_events += sent
        except BrokerUnavailable as exc:
            # Nothing was acked yet: undo the subscription so a retry starts clean.
            if sub.id in conn.subscriptions:
                hub.unsubscribe(conn, sub.id, None)
            raise ProtocolError(
                "unavailable", f"the broker is unavailable, retry shortly ({exc})", msg.id, msg.type
            ) from None
        finally:
            conn.held = None


async def _send_merged(
    hub: Hub,
    conn: Connection,
    backlog: list[PublishedEvent],
    floor: dict[SubscriptionType, int],
) -> int:
    """Send backlog and held events: per stream by offset, each once, above ``floor``.

    Returns how many backlog events were sent. Leaves ``conn.held`` empty; the caller
    clears it without awaiting, which resumes live delivery."""
    last: dict[SubscriptionType, int] = dict(floor)
    backlog_keys = {(ev.stream, ev.offset) for ev in backlog}
    sent_backlog = 0
    pace = conn.out.limit // 2
    held0 = conn.held or []
    batch = backlog + held0
    held0.clear()
    while batch:
        per_stream: dict[SubscriptionType, dict[int, PublishedEvent]] = {}
        for ev in batch:
            per_stream.setdefault(ev.stream, {})[ev.offset] = ev
        ordered = heapq.merge(
            *([evs[o] for o in sorted(evs)] for evs in per_stream.values()),
            key=lambda ev: ev.published_at,
        )
        for ev in ordered:
            if ev.offset <= last.get(ev.stream, -1):
                continue
            last[ev.stream] = ev.offset
            if hub.send_event(conn, ev) and (ev.stream, ev.offset) in backlog_keys:
                sent_backlog += 1
            if conn.closing:
                return sent_backlog
            if conn.out.size > pace:
                await conn.drained()
                if conn.closing:
                    return sent_backlog
        held = conn.held
        if held is None or not held:
            break
        if len(held) > MAX_HELD:
            conn.close(CloseCode.INSUFFICIENT_STATE, "too far behind during recovery")
            return sent_backlog
        batch = list(held)
        held.clear()
    return sent_backlog
