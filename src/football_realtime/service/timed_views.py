"""Tier timeliness on the fan-out path: a delay line per (tier view, stream), one loop
timer per line (docs/security.md, Timeliness).

The hub hands each event of a timed stream to :meth:`TimedViews.hold` once per timed
view, whoever is subscribed: the line must hold every event the view may see, so that
a connection subscribing while an event waits still gets it when it is due. Events
leave through ``release``, which the hub gives with the event (its per-view fan-out);
connections of tiers without timeliness never pass here.

Times are wall-clock seconds (the broker's ``published_at``); a line's timer fires at
its head's due time on the event loop's clock, so delays are exact to the loop's timer
resolution (about a millisecond), not to a coarser tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Protocol

from ..brokers.base import PublishedEvent
from ..core.events import SubscriptionType
from ..core.permissions import TierPolicy
from ..core.timeliness import DelayLine, Timeliness, visible_until
from .connection import Encoded

log = logging.getLogger("football_realtime.timed_views")

#: The hub's fan-out of one released event to one view's connections.
Release = Callable[[PublishedEvent, Hashable, Encoded], object]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """Call ``callback`` at wall-clock time ``when`` (or at once if it has passed)."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopTimers:
    """:class:`Timers` on the running event loop."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(max(0.0, when - self.clock()), callback)


class _Line:
    __slots__ = ("due", "line", "release", "timer", "view")

    def __init__(self, view: Hashable, rules: Timeliness, release: Release) -> None:
        self.view = view
        self.line: DelayLine[tuple[PublishedEvent, Encoded]] = DelayLine(rules)
        self.release = release
        self.timer: Cancellable | None = None
        self.due = 0.0


class TimedViews:
    def __init__(
        self,
        policy: TierPolicy,
        timers: Timers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.timers: Timers = timers if timers is not None else LoopTimers(clock)
        #: Per stream, the tier views that receive it through a delay line.
        self.by_stream: dict[SubscriptionType, tuple[str, ...]] = {}
        for name, tier in policy.tiers.items():
            for st in tier.timeliness.streams():
                self.by_stream[st] = (*self.by_stream.get(st, ()), name)
        #: The tier views with a rule.
        self.views: frozenset[str] = frozenset(
            name for name, tier in policy.tiers.items() if tier.timeliness.timed
        )
        self._lines: dict[tuple[Hashable, SubscriptionType], _Line] = {}
        #: Direct sends (no stream) waiting for their delay.
        self._direct: set[Cancellable] = set()

    def rules(self, view: Hashable | None, stream: SubscriptionType) -> Timeliness | None:
        """The view's rules when it receives ``stream`` through a line, else None."""
        if view is None or view not in self.by_stream.get(stream, ()):
            return None
        tier = self.policy.get(str(view))
        return None if tier is None else tier.timeliness

    def hold(self, ev: PublishedEvent, view: Hashable, enc: Encoded, release: Release) -> bool:
        """Put ``ev`` (rendered ``enc`` for ``view``) in the view's line for its stream.
        False: nothing waits and it is due, so the caller delivers it now."""
        key = (view, ev.stream)
        entry = self._lines.get(key)
        if entry is None:
            rules = self.rules(view, ev.stream)
            if rules is None:
                return False
            entry = self._lines[key] = _Line(view, rules, release)
        held = entry.line.push(
            (ev, enc), ev.offset, ev.event_type, ev.data, ev.published_at, self.clock()
        )
        if held:
            self._arm(entry)
        return held

    def _arm(self, entry: _Line) -> None:
        due = entry.line.next_due()
        if due is None:
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            return
        if entry.timer is not None:
            if entry.due == due:
                return
            entry.timer.cancel()
        entry.due = due
        entry.timer = self.timers.call_at(due, lambda: self._fire(entry))

    def _fire(self, entry: _Line) -> None:
        entry.timer = None
        try:
            for ev, enc in entry.line.pop_due(self.clock()):
                entry.release(ev, entry.view, enc)
        except Exception:  # a bug in one release must not stop the line's timer
            log.exception("releasing a delayed event failed")
        self._arm(entry)

    def visible_top(
        self,
        view: Hashable | None,
        stream: SubscriptionType,
        top: int,
        received: Mapping[SubscriptionType, int],
        history: list[PublishedEvent] | None = None,
    ) -> int:
        """The newest offset of ``stream`` that ``view`` may see now, given the broker's
        ``top``: before the first event waiting in its line; with nothing waiting, what
        this instance has received (later events are on their way into the line).
        ``history`` (in offset order), when the caller has it, also bounds it by the
        delays: it covers what this instance has not received yet (e.g. just started)."""
        rules = self.rules(view, stream)
        if rules is None:
            return top
        entry = self._lines.get((view, stream))
        first = None if entry is None else entry.line.first_waiting()
        cut = top if first is None else min(top, first - 1)
        if first is None and stream in received:
            cut = min(cut, received[stream])
        if history:
            until = visible_until(
                rules,
                [(ev.offset, ev.event_type, ev.published_at) for ev in history if ev.offset <= cut],
                self.clock(),
            )
            if until is not None:
                cut = min(cut, until)
        return cut

    def waiting(self, view: Hashable | None, stream: SubscriptionType) -> list[PublishedEvent]:
        """The events waiting in ``view``'s line for ``stream``, in offset order."""
        entry = self._lines.get((view, stream))
        return [] if entry is None else [ev for ev, _ in entry.line.waiting()]

    def direct_delay(self, view: Hashable | None, ev: PublishedEvent) -> float:
        """Seconds a direct send (not part of a stream) waits for ``view``."""
        rules = self.rules(view, ev.stream)
        return 0.0 if rules is None else rules.delay(ev.event_type)

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        def fire() -> None:
            self._direct.discard(handle)
            callback()

        handle = self.timers.call_at(self.clock() + delay, fire)
        self._direct.add(handle)

    def held(self) -> int:
        """Events waiting in every line."""
        return sum(entry.line.held for entry in self._lines.values())

    def thinned(self) -> int:
        """Events dropped by thinning (a newer one of their key replaced them)."""
        return sum(entry.line.thinned for entry in self._lines.values())

    def close(self) -> None:
        for entry in self._lines.values():
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
        for handle in self._direct:
            handle.cancel()
        self._direct.clear()


__all__ = ["LoopTimers", "Release", "TimedViews", "Timers"]
