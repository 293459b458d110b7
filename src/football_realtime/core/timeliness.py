"""Tier timeliness: a tier may get some event types late (``delay_seconds``) or thinned
(``min_interval_seconds`` per key, latest wins). Pure logic with the clock passed in.

A tier's view of a stream is a *delay line*: the events of the stream that the tier may
receive enter it in offset order and leave it in the same order, each no earlier than
its due time:

* ``delay_seconds`` of its event type after it was published (``published_at``, the
  broker's clock, so every instance releases it at the same moment);
* for a thinned type, no earlier than ``min_interval_seconds`` after the previous event
  of its key left the line; a newer event of the same key that arrives meanwhile
  replaces the waiting one (latest wins, the older one is dropped).

Events leave in offset order because clients position themselves by offset (a client
drops an event whose offset is not above the last it has, and recovers with ``since``
from the last): an event that is due waits behind an earlier one that is not. So a
type without a rule is delayed too when it follows a delayed one on the same stream;
configure a whole stream (``"matches": 30``) to keep it simple.

Goals, match status and predictions may be delayed but never thinned: only the types
with a conflation key (:mod:`.conflation`: odds per match and bookmaker, system status,
analytics per period) accept ``min_interval_seconds``; the key is the conflation key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .conflation import CONFLATED_EVENT_TYPES, conflation_key
from .events import EVENT_STREAM, STREAM_EVENT_TYPES, EventType, SubscriptionType

#: Upper bound of either setting: a day. Longer is a configuration mistake.
MAX_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class Timeliness:
    """One tier's rules: per event type, its delay and its minimum interval per key."""

    delays: Mapping[EventType, float] = field(default_factory=dict)
    min_intervals: Mapping[EventType, float] = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        return bool(self.delays or self.min_intervals)

    def streams(self) -> frozenset[SubscriptionType]:
        """The streams this tier receives through a delay line."""
        return frozenset(EVENT_STREAM[et] for et in (*self.delays, *self.min_intervals))

    def delay(self, event_type: EventType) -> float:
        return self.delays.get(event_type, 0.0)

    def describe(self) -> dict[str, Any]:
        return {
            "delay_seconds": {et.value: s for et, s in sorted(self.delays.items())},
            "min_interval_seconds": {et.value: s for et, s in sorted(self.min_intervals.items())},
        }

    @classmethod
    def from_config(cls, tier: str, delays: Any, min_intervals: Any) -> Timeliness:
        """From a tier's ``delay_seconds`` and ``min_interval_seconds`` objects (keys:
        event types or stream names, values: seconds); ``ValueError`` names the bad entry."""
        d = _seconds_by_type(tier, "delay_seconds", delays)
        # A stream named here thins the types of it that may be thinned.
        m = _seconds_by_type(tier, "min_interval_seconds", min_intervals, CONFLATED_EVENT_TYPES)
        never = sorted(et.value for et in m if et not in CONFLATED_EVENT_TYPES)
        if never:
            allowed = ", ".join(sorted(et.value for et in CONFLATED_EVENT_TYPES))
            raise ValueError(
                f"tier {tier!r}: min_interval_seconds may thin only {allowed}; "
                f"{', '.join(never)} may be delayed but never dropped"
            )
        return cls(d, m)


def _seconds_by_type(
    tier: str, name: str, raw: Any, of_streams: frozenset[EventType] | None = None
) -> dict[EventType, float]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"tier {tier!r}: {name} must be an object of seconds per type")
    out: dict[EventType, float] = {}
    # Streams first, then single types: a type named on its own overrides its stream's
    # figure, whatever the order of the keys.
    items = sorted(raw.items(), key=lambda kv: kv[0] not in SubscriptionType.__members__.values())
    for key, value in items:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"tier {tier!r}: {name}.{key} must be a number of seconds")
        seconds = float(value)
        if not 0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"tier {tier!r}: {name}.{key} must be within 0..{MAX_SECONDS:g}")
        if key in SubscriptionType.__members__.values():
            types: tuple[EventType, ...] = tuple(
                et
                for et in STREAM_EVENT_TYPES[SubscriptionType(key)]
                if of_streams is None or et in of_streams
            )
            if not types:
                raise ValueError(
                    f"tier {tier!r}: {name}.{key}: no event type of this stream may be "
                    "thinned (goals, match status and predictions are never dropped)"
                )
        else:
            try:
                et = EventType(key)
            except ValueError:
                raise ValueError(
                    f"tier {tier!r}: {name}: unknown event type or stream {key!r}"
                ) from None
            if et not in EVENT_STREAM:
                raise ValueError(f"tier {tier!r}: {name}: {et.value} is not a published type")
            types = (et,)
        for et in types:
            if seconds > 0:
                out[et] = seconds
            else:
                out.pop(et, None)
    return out


E = TypeVar("E")


class _Entry(Generic[E]):
    __slots__ = ("due", "item", "key", "live", "offset")

    def __init__(self, item: E, offset: int, due: float, key: Hashable | None) -> None:
        self.item = item
        self.offset = offset
        self.due = due
        self.key = key
        self.live = True


class DelayLine(Generic[E]):
    """One tier view of one stream: items enter in offset order and leave in offset
    order, each at or after its due time (see the module's docstring). ``E`` is what
    the caller keeps per event (the event and its rendered bytes)."""

    __slots__ = ("_last", "_pending", "_queue", "held", "rules", "thinned")

    def __init__(self, rules: Timeliness) -> None:
        self.rules = rules
        self._queue: deque[_Entry[E]] = deque()
        #: Thinned keys with an event waiting in the line.
        self._pending: dict[Hashable, _Entry[E]] = {}
        #: Thinned keys: when their previous event left the line.
        self._last: dict[Hashable, float] = {}
        #: Events dropped because a newer one of their key replaced them.
        self.thinned = 0
        #: Events waiting in the line.
        self.held = 0

    def push(
        self,
        item: E,
        offset: int,
        event_type: EventType,
        data: Mapping[str, Any],
        published_at: float,
        now: float,
    ) -> bool:
        """An event arrives (in offset order). True: it waits in the line (release it
        with :meth:`pop_due`); False: nothing waits before it and it is due, so it may
        go at once (its key's window starts now)."""
        rules = self.rules
        due = published_at + rules.delays.get(event_type, 0.0)
        key: Hashable | None = None
        interval = rules.min_intervals.get(event_type)
        if interval is not None:
            key = conflation_key(event_type, data)
            waiting = self._pending.get(key)
            if waiting is not None:
                waiting.live = False  # latest wins
                self.thinned += 1
                self.held -= 1
            left = self._last.get(key)
            if left is not None:
                if left + interval > now:
                    due = max(due, left + interval)
                else:
                    del self._last[key]
        if self.held == 0 and due <= now:
            self._queue.clear()  # only dead entries remain
            if key is not None:
                self._pending.pop(key, None)
                self._left(key, now)
            return False
        entry = _Entry(item, offset, due, key)
        self._queue.append(entry)
        self.held += 1
        if key is not None:
            self._pending[key] = entry
        return True

    def _left(self, key: Hashable, now: float) -> None:
        self._last[key] = now
        if len(self._last) > 4096:
            longest = max(self.rules.min_intervals.values(), default=0.0)
            self._last = {k: t for k, t in self._last.items() if t + longest > now}

    def pop_due(self, now: float) -> Iterator[E]:
        """The items due at ``now``, in offset order; the rest wait behind the first
        that is not due."""
        queue = self._queue
        while queue:
            head = queue[0]
            if not head.live:
                queue.popleft()
                continue
            if head.due > now:
                return
            queue.popleft()
            self.held -= 1
            if head.key is not None:
                self._pending.pop(head.key, None)
                self._left(head.key, now)
            yield head.item

    def waiting(self) -> list[E]:
        """The items in the line, in offset order."""
        return [entry.item for entry in self._queue if entry.live]

    def next_due(self) -> float | None:
        """When the head is due (None: the line is empty)."""
        for entry in self._queue:
            if entry.live:
                return entry.due
        return None

    def first_waiting(self) -> int | None:
        """The offset of the first event still in the line: the view has seen the
        stream up to just before it (None: it has seen everything that arrived)."""
        for entry in self._queue:
            if entry.live:
                return entry.offset
        return None


def visible_until(
    rules: Timeliness,
    events: list[tuple[int, EventType, float]],
    now: float,
) -> int | None:
    """Of a stream's history ``(offset, type, published_at)`` in offset order, the
    offset before the first event this tier may not see yet (its delay has not passed);
    None: it may see all of them. A replay is not thinned: it sends every event of
    the history that the tier may see."""
    delays = rules.delays
    if not delays:
        return None
    for offset, event_type, published_at in events:
        d = delays.get(event_type)
        if d is not None and published_at + d > now:
            return offset - 1
    return None


__all__ = ["MAX_SECONDS", "DelayLine", "Timeliness", "visible_until"]
