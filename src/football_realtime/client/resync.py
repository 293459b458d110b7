"""Recovery on the wire: what arrives while a connection renews its subscriptions,
when stream positions may move, and telling the application what could not be replayed.

After a reconnect every subscription is renewed with ``since``; the server replays
what each missed, with live events in between. Until every ack is in and a heartbeat
sent after the last one has come back (replies come in request order, each after its
request's replay), events are held in the connection's buffer; then they are
released per stream in offset order, each once (:class:`~.recovery.ResyncBuffer`),
and the connection counts as open. Outside a resubscription, an event not above the
last one delivered on its stream is a duplicate.

Positions from acks move the recovery point only when that is safe: at the end of
the resubscription (a replay covers everything up to its ack), or one heartbeat round
after a plain ack (whose offset may be ahead of what has reached the client). The
bookkeeping itself is pure and lives in :mod:`.recovery`; this module decides when.

When a renewal's ack says ``recovered: false``, or a stream's epoch changes under a
subscription, the application gets a :class:`RecoveryFailed` notice before the
events that follow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..core.events import Payload
from .connection import Connection, SnapshotWindow, SyncState
from .dispatch import Delivery
from .errors import ClientClosed
from .lifecycle import Lifecycle
from .models import ClientStats, Event
from .options import ClientOptions
from .recovery import ResyncBuffer, StreamTracker, positions
from .subscription import RecoveryFailed, Subscription

log = logging.getLogger("football_realtime.client")


class Resync:
    """The client's resubscription and position rules, applied to one connection at a time."""

    def __init__(
        self,
        options: ClientOptions,
        tracker: StreamTracker,
        stats: ClientStats,
        lifecycle: Lifecycle,
    ) -> None:
        self._options = options
        self._tracker = tracker
        self._stats = stats
        self._life = lifecycle

    def new_state(self) -> SyncState:
        """A new connection's state: holding events until its resubscription is done."""
        return SyncState(ResyncBuffer(self._options.max_resync_events))

    def since(self, streams: tuple[str, ...]) -> dict[str, dict[str, Any]] | None:
        """The ``since`` to renew a subscription on ``streams`` with (None: nothing known)."""
        return self._tracker.since(streams)

    # -- events --------------------------------------------------------------------

    def route(self, conn: Connection, ev: Event[Payload]) -> Delivery | None:
        """What to deliver for an event now: None if it is held or a duplicate."""
        sync = conn.sync
        stream = ev.stream
        offset = ev.offset
        target: Subscription | None = None
        if_seen: Delivery | None = None
        if stream is not None and offset is not None:
            w = sync.snapshot
            if w is not None and offset <= w.offsets.get(stream, -1):
                # Sent as the subscription's initial state. If the application has
                # seen this offset already, it is state for that subscription only,
                # outside the duplicate bookkeeping; otherwise it is news for all.
                ev = replace(ev, snapshot=True)
                target = w.sub
                if_seen = (ev, target, True)
        delivery: Delivery = (ev, target, False)
        if sync.buffer is not None:
            if sync.buffer.full:
                conn.fatal = ClientClosed(
                    f"more than {self._options.max_resync_events} events arrived while "
                    "resubscribing (raise max_resync_events)"
                )
                return None
            if stream is not None and offset is not None:
                sync.buffer.add(delivery, stream, offset, if_seen)
            else:
                sync.buffer.add(delivery)
            return None
        if stream is not None and offset is not None and not self._tracker.accept(stream, offset):
            if if_seen is None:
                self._stats.duplicates_dropped += 1
                return None
            delivery = if_seen
        return delivery

    # -- acks ------------------------------------------------------------------------

    def expect(self, conn: Connection, sub: Subscription) -> None:
        """``sub`` is being renewed on ``conn``: hold events until its ack."""
        conn.sync.waiting.add(sub.id)

    def note_ack(
        self, conn: Connection, sub: Subscription, streams: Mapping[str, Any], renewed: bool
    ) -> list[str]:
        """Take the positions of a subscribe ack (``renewed``: sent with ``since``).

        Returns the streams whose epoch changed (their history is gone)."""
        sync = conn.sync
        changed = self._tracker.on_ack(streams)
        acked = positions(streams)
        for stream, pos in acked.items():
            start = sub._start.get(stream)
            if start is None or start[0] != pos[0]:
                # A new epoch replayed from its start (``replay_after``) belongs to
                # the subscription: its events come after the start.
                entry = streams.get(stream)
                after = entry.get("replay_after") if isinstance(entry, Mapping) else None
                if type(after) is int and 0 <= after < pos[1]:
                    pos = (pos[0], after)
                sub._start[stream] = pos
        later = sync.resync_advance if renewed and sync.buffer is not None else sync.advance
        for stream, (epoch, offset) in acked.items():
            prev = later.get(stream)
            if prev is not None and prev[0] == epoch:
                offset = max(offset, prev[1])
            later[stream] = (epoch, offset)
        return changed

    def outcome(
        self,
        sub: Subscription,
        result: Mapping[str, Any],
        since: Mapping[str, Any] | None,
        changed: list[str],
    ) -> list[Delivery]:
        """What the application is told of a subscribe ack: for a renewal (sent with
        ``since``), whether the server replayed what was missed; for any ack, a stream
        of ``sub`` whose epoch changed (its history is gone)."""
        if since is not None:
            recovered = result.get("recovered") is True
            sub.recovered = recovered
            if recovered:
                self._stats.recoveries += 1
                return []
            reason = result.get("reason")
            return [self.notice(sub, tuple(since), reason, "server did not recover")]
        if changed and set(changed) & set(sub.streams):
            moved = tuple(s for s in changed if s in sub.streams)
            return [self.notice(sub, moved, None, "the stream's epoch changed")]
        return []

    def notice(
        self, sub: Subscription, streams: tuple[str, ...], reason: Any, default: str
    ) -> Delivery:
        """A :class:`RecoveryFailed` for ``sub`` (``reason`` if it is a non-empty string)."""
        self._stats.recoveries_failed += 1
        text = reason if isinstance(reason, str) and reason else default
        log.info("subscription %s not recovered: %s", sub.id, text)
        return (RecoveryFailed(sub, streams, text), None, False)

    def open_window(self, conn: Connection, sub: Subscription, streams: Mapping[str, Any]) -> None:
        """The events up to the ack's offsets are ``sub``'s snapshot."""
        offsets = {k: o for k, (_, o) in positions(streams).items()}
        conn.sync.snapshot = SnapshotWindow(sub, offsets)

    def settled(self, conn: Connection, sub: Subscription) -> None:
        """``sub`` no longer awaits its resubscribe ack."""
        sync = conn.sync
        if sub.id not in sync.waiting:
            return
        sync.waiting.discard(sub.id)
        if not sync.waiting and sync.barrier_passed and sync.buffer is not None:
            # Its replay follows its ack: one more barrier before releasing events.
            sync.barrier_passed = False
            conn.spawn(self.send_barrier(conn))

    # -- the barrier -------------------------------------------------------------------

    async def send_barrier(self, conn: Connection) -> asyncio.Future[dict[str, Any]]:
        """A heartbeat whose reply means every replay requested before it has arrived."""

        def passed(result: dict[str, Any]) -> list[Delivery]:
            conn.sync.barrier_passed = True
            return self._finish(conn)

        return await conn.channel.send("heartbeat", None, on_ack=passed)

    def _finish(self, conn: Connection) -> list[Delivery]:
        sync = conn.sync
        buf = sync.buffer
        if buf is None or sync.waiting or not sync.barrier_passed:
            return []
        sync.buffer = None
        held = len(buf)
        out = buf.drain(self._tracker)
        self._stats.duplicates_dropped += held - len(out)
        for stream, (epoch, offset) in sync.resync_advance.items():
            self._tracker.advance(stream, epoch, offset)
        sync.resync_advance.clear()
        self._life.mark_open(conn)
        return out

    def heartbeat_reply(self, conn: Connection) -> Callable[[dict[str, Any]], list[Delivery]]:
        """The ack callback of a keepalive heartbeat."""

        def reply(result: dict[str, Any]) -> list[Delivery]:
            # Positions from plain acks at least one heartbeat round old are safe now.
            sync = conn.sync
            for stream, (epoch, offset) in sync.advance_ready.items():
                self._tracker.advance(stream, epoch, offset)
            sync.advance_ready = sync.advance
            sync.advance = {}
            return []

        return reply
