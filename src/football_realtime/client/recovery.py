"""Recovery bookkeeping: stream positions, duplicate suppression, resync ordering.

Pure: no I/O, no clock. The client feeds it what arrives on the socket in arrival
order; it answers what to send as ``since`` and which events the application sees.

The contract it implements (docs/protocol.md, recovery):

* Every published event carries ``stream`` and ``offset``; offsets of a stream
  grow by one per publish, so within one ``epoch`` they are comparable.
* A subscribe ack's ``result.streams`` gives, per stream the subscription covers,
  the stream's ``epoch`` and newest ``offset`` at subscribe time.
* A subscribe carrying ``since`` makes the server replay the matching events after
  that offset, then continue live. A new epoch means the history is gone and
  offsets start again: nothing of the old epoch can be compared with the new one.

While a connection resubscribes (several subscriptions, each replaying what it
missed, with live events in between) events are held in a :class:`ResyncBuffer`
and released in stream order, each once, when every reply is in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from ..core.messages import StreamPosition

T = TypeVar("T")


def positions(streams: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """The well-formed ``{"stream": {"epoch": str, "offset": int}}`` entries of an ack."""
    out: dict[str, tuple[str, int]] = {}
    for name, pos in streams.items():
        if isinstance(pos, Mapping):
            epoch = pos.get("epoch")
            offset = pos.get("offset")
            if type(epoch) is str and type(offset) is int:
                out[name] = (epoch, offset)
    return out


class StreamTracker:
    """Per-stream epoch and offsets for one client, across its connections.

    Per stream: the recovery point sent as ``since`` (a :class:`StreamPosition`, the
    newest offset known to be accounted for: from acks and from delivered events), and
    ``seen``, the newest offset handed to the application in this epoch, at or below
    which an event is a duplicate. An event that arrives before its subscription's ack
    has no epoch yet: its offset waits in ``_early`` until the ack names the epoch.
    """

    def __init__(self) -> None:
        self._streams: dict[str, StreamPosition] = {}
        self._early: dict[str, int] = {}
        self._seen: dict[str, int] = {}

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams or stream in self._early

    def get(self, stream: str) -> StreamPosition | None:
        """The recovery point of ``stream`` once its epoch is known."""
        return self._streams.get(stream)

    def seen(self, stream: str) -> int | None:
        """The newest offset of ``stream`` handed to the application in this epoch."""
        return self._seen.get(stream)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every stream's position, as ``{"stream": {"epoch", "offset"}}``."""
        return {name: {"epoch": p.epoch, "offset": p.offset} for name, p in self._streams.items()}

    def since(self, streams: Iterable[str]) -> dict[str, dict[str, Any]] | None:
        """The ``since`` object to resubscribe with, for the given streams; None when
        no position (with an epoch) is known for any of them."""
        out: dict[str, dict[str, Any]] = {}
        for name in streams:
            p = self._streams.get(name)
            if p is not None:
                out[name] = {"epoch": p.epoch, "offset": p.offset}
        return out or None

    def restore(self, taken: Mapping[str, tuple[str, int]]) -> None:
        """Start from positions a previous run's application took (a durable session's
        store): they are the recovery point, and nothing at or below them is new."""
        for name, (epoch, offset) in taken.items():
            self._streams[name] = StreamPosition(epoch, offset)
            self._seen[name] = offset

    def on_ack(self, streams: Mapping[str, Any]) -> list[str]:
        """Apply a subscribe ack's ``result.streams``: adopt the position of a stream
        seen for the first time, and restart a stream whose epoch changed.

        Returns the streams whose epoch differs from the one known before: their
        history is gone, the position restarts at the ack's, and duplicate
        suppression starts afresh. A known position in the same epoch is not moved:
        the ack's offset may be ahead of what has reached the client (an instance
        a few milliseconds behind the broker), so :meth:`advance` moves it once
        that cannot be the case any more. Malformed entries are ignored.
        """
        changed: list[str] = []
        for name, (epoch, offset) in positions(streams).items():
            cur = self._streams.get(name)
            if cur is None:
                early = self._early.pop(name, None)
                self._streams[name] = StreamPosition(epoch, offset if early is None else early)
            elif cur.epoch != epoch:
                self._streams[name] = StreamPosition(epoch, offset)
                self._seen.pop(name, None)
                changed.append(name)
        return changed

    def advance(self, stream: str, epoch: str, offset: int) -> None:
        """Raise the recovery point of ``stream`` to ``offset`` (same epoch only)."""
        cur = self._streams.get(stream)
        if cur is not None and cur.epoch == epoch and offset > cur.offset:
            self._streams[stream] = StreamPosition(epoch, offset)

    def accept(self, stream: str, offset: int) -> bool:
        """Whether an event is new (True) or a duplicate (False); records it if new."""
        seen = self._seen.get(stream)
        if seen is not None and offset <= seen:
            return False
        self._seen[stream] = offset
        cur = self._streams.get(stream)
        if cur is not None:
            if offset > cur.offset:
                self._streams[stream] = StreamPosition(cur.epoch, offset)
        else:
            # An event ahead of its subscription's ack: the epoch comes with the ack.
            early = self._early.get(stream)
            if early is None or offset > early:
                self._early[stream] = offset
        return True


class ResyncBuffer(Generic[T]):
    """Holds what arrives while a connection resubscribes; :meth:`drain` orders it.

    Each subscription replays its own matches, so one stream's events can arrive
    out of order (subscription A replays 5, 8, 10, then B replays 7, 9) and twice
    (an event matching A and B, or replayed and then live). :meth:`drain` returns
    every stream's events in offset order, each once and only if newer than what
    the application has seen. Items without a stream (status messages, targeted
    sends, notices) keep their place; the relative order of different streams is
    kept slot by slot (no order across streams is promised by the server).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: list[tuple[str | None, int, T, T | None]] = []

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.limit

    def add(
        self, item: T, stream: str | None = None, offset: int = 0, if_seen: T | None = None
    ) -> None:
        """Hold ``item``. A stream item that turns out to be already seen is dropped,
        or replaced by ``if_seen`` in its arrival place when given (snapshot state)."""
        self._items.append((stream, offset, item, if_seen))

    def drain(self, tracker: StreamTracker) -> list[T]:
        """Everything held, in delivery order, duplicates removed; empties the buffer."""
        items = self._items
        self._items = []
        per_stream: dict[str, list[tuple[int, int]]] = {}
        for i, (stream, offset, _, _) in enumerate(items):
            if stream is not None:
                per_stream.setdefault(stream, []).append((offset, i))
        kept: dict[str, list[int]] = {}
        in_place: dict[int, T] = {}
        for stream, entries in per_stream.items():
            entries.sort()
            order: list[int] = []
            for offset, i in entries:
                if tracker.accept(stream, offset):
                    order.append(i)
                else:
                    fallback = items[i][3]
                    if fallback is not None:
                        in_place[i] = fallback
            kept[stream] = order
        cursors = dict.fromkeys(kept, 0)
        out: list[T] = []
        for i, (stream, _, item, _) in enumerate(items):
            if stream is None:
                out.append(item)
            elif i in in_place:
                out.append(in_place[i])
            else:
                k = cursors[stream]
                order = kept[stream]
                if k < len(order):
                    out.append(items[order[k]][2])
                    cursors[stream] = k + 1
        return out
