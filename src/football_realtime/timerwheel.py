"""Many coarse deadlines on one event-loop timer.

A loop timer per connection per deadline (keepalive ping, pong wait, token expiry
warning, token expiry) costs a ``TimerHandle`` of 300-650 bytes each and a heap entry
in the loop; at 10,000 idle connections that is most of the timers' memory. Here a
deadline is rounded up to the next ``tick`` and the item is kept in that tick's set;
one loop timer is armed for the earliest non-empty tick. So deadlines fire at most one
tick late, and an item costs a set entry.

The item keeps its own slot number (returned by :meth:`TimerWheel.add`, 0 = none) so
that removing it is O(1); the wheel passes the item to ``due`` and forgets it first.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

log = logging.getLogger("football_realtime.timerwheel")


class TimerWheel(Generic[T]):
    __slots__ = ("_due", "_handle", "_slots", "loop", "tick")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, tick: float, due: Callable[[T], None]
    ) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self.loop = loop
        self.tick = tick
        self._due = due
        self._slots: dict[int, set[T]] = {}
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def add(self, item: T, when: float, slot: int = 0) -> int:
        """Schedule ``item`` at loop time ``when`` (moving it from ``slot`` if it was
        scheduled). Returns its new slot, to give back to :meth:`remove`."""
        if slot:
            self.remove(item, slot)
        new = max(1, math.ceil(when / self.tick))
        members = self._slots.get(new)
        if members is None:
            members = self._slots[new] = set()
            handle = self._handle
            if handle is None or new * self.tick < handle.when():
                if handle is not None:
                    handle.cancel()
                self._handle = self.loop.call_at(new * self.tick, self._run)
        members.add(item)
        return new

    def remove(self, item: T, slot: int) -> None:
        if not slot:
            return
        members = self._slots.get(slot)
        if members is not None:
            members.discard(item)
            if not members:
                del self._slots[slot]

    def _run(self) -> None:
        self._handle = None
        now = math.floor(self.loop.time() / self.tick)
        for slot in sorted(s for s in self._slots if s <= now):
            for item in self._slots.pop(slot, ()):
                try:
                    self._due(item)
                except Exception:  # one item must not stop the rest
                    log.exception("timer callback failed")
        if self._slots and self._handle is None:
            nxt = max(min(self._slots), now + 1)
            self._handle = self.loop.call_at(nxt * self.tick, self._run)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()


__all__ = ["TimerWheel"]
