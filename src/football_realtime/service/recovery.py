"""Subscribe with recovery (``since``) and snapshots, without gaps or duplicates.

While a subscription is being set up with ``since`` or ``snapshot``, the
connection's live events are held (``Connection.held``). The server then reads
the broker's history (or snapshot), merges it with the held events per stream
by offset, drops what the client already has and duplicates, and sends the
result paced by what the socket takes. Only then does live delivery resume; the
switch happens without an await, so no event falls between the two.

``recovered: true`` means every stream of ``since`` was replayed from the client's
offset. Otherwise the ack says ``recovered: false`` with a ``reason``, and each
stream that can still be replayed is: a stream whose epoch changed (history lost,
e.g. Redis restarted empty) is replayed from the new epoch's first offset when its
history still reaches back there, so only the old epoch's tail is lost. Per stream,
the ack's ``streams`` entry says ``recovered`` and, when a replay follows,
``replay_after`` (the offset it starts after). A stream that cannot be replayed gets
the snapshot when one was asked for.

Each connection's delivery of a stream is positioned by its first subscription to it
(``Connection.floors``): live events at or below that offset are not sent.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ..brokers.base import Broker, BrokerUnavailable, KeepsCritical, PublishedEvent
from ..core import protocol as proto
from ..core.close_codes import CloseCode
from ..core.events import STREAM_EVENT_TYPES, SubscriptionType
from ..core.protocol import ProtocolError
from ..core.subscriptions import EventAttributes, Subscription, SubscriptionFilter
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

    async def subscribe(
        self, conn: Connection, msg: proto.Subscribe
    ) -> tuple[Subscription, dict[SubscriptionType, tuple[str, int]]]:
        """Subscribe, ack, replay or snapshot. Returns the subscription and, per stream it
        covers, where its delivery started: ``(epoch, offset)`` with every later event
        sent or to come (a durable session's starting position)."""
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
        # Streams no other subscription of this connection covers: this one positions
        # their delivery (Connection.floors).
        fresh = [
            st
            for st in streams
            if not any(st in o.streams for o in conn.subscriptions.values() if o is not sub)
        ]
        hold = since is not None or msg.snapshot
        if hold:
            conn.held = []
        try:
            result = sub.describe()
            positions: dict[SubscriptionType, tuple[str, int]] = {}
            #: The broker's newest offsets (``positions``: what the tier may see).
            newest: dict[SubscriptionType, int] = {}
            for st in streams:
                epoch, newest[st] = await broker.position(st)
                positions[st] = (epoch, self._visible(conn, st, newest[st]))
            result["streams"] = {
                st.value: {"epoch": e, "offset": o} for st, (e, o) in positions.items()
            }
            for st, (e, _) in positions.items():
                conn.epochs[st] = e
            backlog: list[PublishedEvent] = []
            # Per stream replayed: the offset after which its replay starts.
            replay_after: dict[SubscriptionType, int] = {}
            recovered = False
            if since is not None:
                reasons: list[str] = []
                for st, pos in since.items():
                    epoch, top = positions[st]
                    new_epoch = pos.epoch != epoch
                    # The old epoch's tail is lost; the new epoch's history may still
                    # reach back to its first offset: then it is replayed from there.
                    after = 0 if new_epoch else pos.offset
                    if not new_epoch and pos.offset > newest[st]:
                        reasons.append(
                            f"{st.value}: offset {pos.offset} is ahead of the stream ({newest[st]})"
                        )
                        continue
                    events = self._visible_history(conn, st, top, await broker.history(st, after))
                    if new_epoch:
                        reasons.append(
                            f"{st.value}: epoch changed (history was lost): events of the "
                            "old epoch after your offset may be missing; "
                            + (
                                "the new epoch's history no longer reaches back to offset 1"
                                if events is None
                                else "the new epoch is replayed from offset 1"
                            )
                        )
                    elif events is None:
                        reasons.append(
                            f"{st.value}: history no longer reaches back to offset {after + 1}"
                        )
                    if events is None:
                        continue
                    replay_after[st] = after
                    backlog.extend(_matching(sub, events))
                recovered = not reasons
                result["recovered"] = recovered
                for st, (e, _) in positions.items():
                    if st in since:
                        entry = result["streams"][st.value]
                        entry["recovered"] = st in replay_after and since[st].epoch == e
                        if st in replay_after:
                            entry["replay_after"] = replay_after[st]
                if recovered:
                    stats.recoveries += 1
                else:
                    result["reason"] = "; ".join(reasons)
                    stats.recoveries_failed += 1
            snapshotted: set[SubscriptionType] = set()
            if msg.snapshot and not recovered:
                for st in streams:
                    if st not in replay_after:
                        snapshotted.add(st)
                        snap = await self._visible_snapshot(conn, st, positions[st][1])
                        backlog.extend(_matching(sub, snap))
            hub.send_payload(conn, proto.ack(msg.id, msg.type, result))
            hub.notify_user_subscriptions(conn, "subscribed", (sub,))
            # Where each stream's delivery starts: after its replay's start, or after
            # the ack's offset; a snapshot's stream after what this instance delivered
            # (the broker's snapshot and history end there; later events come live).
            last: dict[SubscriptionType, int] = dict(replay_after)
            for st in fresh:
                if st not in replay_after and st not in snapshotted:
                    last[st] = positions[st][1]
            if hold:
                sent = await _send_merged(hub, conn, backlog, last)
                if recovered or replay_after:
                    stats.replayed_events += sent
                elif msg.snapshot:
                    stats.snapshot_events += sent
            # No await from here on: live delivery resumes (finally) with the floors set.
            for st in fresh:
                conn.floors[st] = last.get(st, 0)
            start = {
                st: (epoch, replay_after.get(st, top)) for st, (epoch, top) in positions.items()
            }
            return sub, start
        except BrokerUnavailable as exc:
            # Nothing was acked yet: undo the subscription so a retry starts clean.
            if sub.id in conn.subscriptions:
                hub.unsubscribe(conn, sub.id, None)
            raise ProtocolError(
                "unavailable", f"the broker is unavailable, retry shortly ({exc})", msg.id, msg.type
            ) from None
        finally:
            conn.held = None

    def _visible(self, conn: Connection, st: SubscriptionType, top: int) -> int:
        """The newest offset of ``st`` the connection's tier may see now (tier
        timeliness: a delayed tier sees the stream as it was)."""
        timing = self.hub.timing
        if timing is None:
            return top
        return timing.visible_top(conn.view, st, top, self.hub.tops)

    def _visible_history(
        self,
        conn: Connection,
        st: SubscriptionType,
        top: int,
        events: list[PublishedEvent] | None,
    ) -> list[PublishedEvent] | None:
        """Of a replay, what the connection's tier may see now: never an event its
        delay still holds back (those come live, when due)."""
        timing = self.hub.timing
        if timing is None or not events:
            return events
        cut = timing.visible_top(conn.view, st, top, self.hub.tops, events)
        return [ev for ev in events if ev.offset <= cut]

    async def _visible_snapshot(
        self, conn: Connection, st: SubscriptionType, top: int
    ) -> list[PublishedEvent]:
        """The stream's snapshot as the connection's tier may see it now: an entry its
        delay still holds back is replaced by the newest earlier event of the same key
        that the history still has, or left out."""
        snap = await self.broker.snapshot(st)
        timing = self.hub.timing
        if timing is None or timing.rules(conn.view, st) is None:
            return snap
        # Without the history first: every entry up to the tier's line (or, with
        # nothing waiting, up to what this instance received) is visible already. The
        # history is read only to replace an entry held back, or when this instance has
        # received nothing of the stream yet (its publish times then decide).
        cut = timing.visible_top(conn.view, st, top, self.hub.tops)
        if st in self.hub.tops and all(ev.offset <= cut for ev in snap):
            return snap
        history = await self.broker.history(st, 0) or []
        cut = timing.visible_top(conn.view, st, top, self.hub.tops, history)
        late = {_snapshot_key(ev) for ev in snap if ev.offset > cut}
        if not late:
            return snap
        earlier: dict[tuple[str, int | None], PublishedEvent] = {}
        for ev in history:
            if ev.offset > cut:
                break
            k = _snapshot_key(ev)
            if k in late:
                earlier[k] = ev
        kept = [ev for ev in snap if ev.offset <= cut] + list(earlier.values())
        return sorted(kept, key=lambda ev: ev.offset)

    async def restore(
        self,
        conn: Connection,
        specs: list[tuple[SubscriptionType | None, SubscriptionFilter]],
        positions: dict[SubscriptionType, tuple[str, int]],
    ) -> tuple[list[Subscription], list[ProtocolError], dict[SubscriptionType, tuple[str, int]]]:
        """A resumed durable session: subscribe ``specs`` again (within the tier, as
        ``subscribe`` does) on a connection that holds no subscription yet, announce each
        (``user_subscription_changed`` with ``restored``, ``streams``, ``recovered``),
        then send every event after ``positions`` (the session's acknowledged
        positions) that matches any of them, merged with live events: per stream in
        offset order, each once, then live. Where a stream's history no longer reaches
        back (same epoch), its retained critical events after the acknowledged offset
        and what the history still holds are sent instead (``recovered: false``, the
        reason says so, the stream's entry has ``history_from``).

        Returns the subscriptions made, the refusals (a spec the tier no longer allows),
        and per stream where delivery now starts (``(epoch, offset)``: the acknowledged
        position when replayed, else the stream's newest offset)."""
        hub = self.hub
        broker = self.broker
        stats = self.stats
        subs: list[Subscription] = []
        errors: list[ProtocolError] = []
        conn.held = []
        try:
            for subscription_type, flt in specs:
                try:
                    subs.append(self.sessions.subscribe(conn, subscription_type, flt, None))
                except ProtocolError as exc:
                    errors.append(exc)
            streams: list[SubscriptionType] = []
            for sub in subs:
                streams.extend(st for st in sub.streams if st not in streams)
            tops: dict[SubscriptionType, tuple[str, int]] = {}
            newest: dict[SubscriptionType, int] = {}
            for st in streams:
                epoch, newest[st] = await broker.position(st)
                tops[st] = (epoch, self._visible(conn, st, newest[st]))
                conn.epochs[st] = epoch
            backlog: list[PublishedEvent] = []
            replay_after: dict[SubscriptionType, int] = {}
            reasons: dict[SubscriptionType, str] = {}
            # Streams replayed from their critical events: where their history starts.
            history_from: dict[SubscriptionType, int] = {}
            for st in streams:
                epoch, top = tops[st]
                held = positions.get(st)
                if held is None:
                    continue  # nothing known: live from the newest offset
                same = held[0] == epoch
                after = held[1] if same else 0
                if same and after > newest[st]:
                    reasons[st] = (
                        f"{st.value}: offset {after} is ahead of the stream ({newest[st]})"
                    )
                    continue
                events = self._visible_history(conn, st, top, await broker.history(st, after))
                if not same:
                    reasons[st] = (
                        f"{st.value}: epoch changed (history was lost): events of the old "
                        "epoch after your offset may be missing; "
                        + (
                            "the new epoch's history no longer reaches back to offset 1"
                            if events is None
                            else "the new epoch is replayed from offset 1"
                        )
                    )
                elif events is None:
                    reasons[st] = (
                        f"{st.value}: history no longer reaches back to offset {after + 1}"
                    )
                    kept = await _critical_replay(broker, st, after, top)
                    if kept is not None:
                        events, history_from[st], note = kept
                        reasons[st] += note
                        events = self._visible_history(
                            conn, st, top, sorted(events, key=lambda ev: ev.offset)
                        )
                if events is None:
                    continue
                replay_after[st] = after
                for sub in subs:
                    if st in sub.streams:
                        backlog.extend(_matching(sub, events))
            for sub in subs:
                entries: dict[str, dict[str, object]] = {}
                for st in sub.streams:
                    epoch, top = tops[st]
                    entry: dict[str, object] = {
                        "epoch": epoch,
                        "offset": top,
                        "recovered": st in replay_after and st not in reasons,
                    }
                    if st in replay_after:
                        entry["replay_after"] = replay_after[st]
                    if st in history_from:
                        entry["history_from"] = history_from[st]
                    entries[st.value] = entry
                why = [reasons[st] for st in sub.streams if st in reasons]
                extra: dict[str, object] = {"streams": entries, "recovered": not why}
                if why:
                    extra["reason"] = "; ".join(why)
                hub.announce_restored(conn, sub, extra)
            if reasons:
                stats.recoveries_failed += 1
            elif subs:
                stats.recoveries += 1
            last: dict[SubscriptionType, int] = {
                st: replay_after.get(st, tops[st][1]) for st in streams
            }
            start = {st: (tops[st][0], last[st]) for st in streams}
            stats.replayed_events += await _send_merged(hub, conn, backlog, last)
            # No await from here on: live delivery resumes (finally) with the floors set.
            for st in streams:
                conn.floors[st] = last.get(st, 0)
            return subs, errors, start
        except BrokerUnavailable as exc:
            for sub in subs:
                if sub.id in conn.subscriptions:
                    hub.unsubscribe(conn, sub.id, None)
            raise ProtocolError(
                "unavailable", f"the broker is unavailable, retry shortly ({exc})"
            ) from None
        finally:
            conn.held = None


def _snapshot_key(ev: PublishedEvent) -> tuple[str, int | None]:
    """A snapshot keeps the newest event per type and match (as the brokers do)."""
    m = ev.data.get("match_id")
    return (ev.event_type.value, m if type(m) is int else None)


async def _critical_replay(
    broker: Broker, stream: SubscriptionType, after: int, top: int
) -> tuple[list[PublishedEvent], int, str] | None:
    """A resumed session whose stream's history no longer reaches back to ``after + 1``
    (same epoch): the stream's retained critical events after ``after`` and what the
    history still holds, for the caller to merge (``_send_merged``: by offset, each
    once), the first offset from which the replay is complete (the history's first, or
    the next to come after ``top``), and what to add to the reason. None: the broker
    keeps no critical events of this stream (nothing is replayed, as before)."""
    if not isinstance(broker, KeepsCritical):
        return None
    types = [t for t in STREAM_EVENT_TYPES[stream] if t in broker.critical.types]
    if not types:
        return None
    critical = await broker.critical_history(stream, after)
    tail = await broker.history_tail(stream, after)
    start = tail[0].offset if tail else top + 1
    note = (
        f"; its critical events ({', '.join(types)}) after offset {after} were replayed, "
        f"then every event from offset {start}"
    )
    return critical + tail, start, note


async def _send_merged(
    hub: Hub,
    conn: Connection,
    backlog: list[PublishedEvent],
    last: dict[SubscriptionType, int],
) -> int:
    """Send backlog and held events: per stream by offset, each once, above ``last``
    (updated with the last offset sent per stream).

    Returns how many backlog events were sent. Leaves ``conn.held`` empty; the caller
    clears it without awaiting, which resumes live delivery."""
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
