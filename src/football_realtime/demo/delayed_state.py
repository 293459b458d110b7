"""The free viewer's ``/demo/state`` under a delayed tier: the state as it was.

A tier whose ``matches`` events reach it ``delay`` seconds late must not read the
current score over REST either (docs/security.md, Timeliness). The demo samples the
free viewer's snapshot every ``every`` seconds and answers with the newest sample at
least ``delay`` old; its ``server_time`` is when it was taken, so the dashboard applies
the live events after it, which reach the free viewer exactly as late.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class DelayedState:
    def __init__(self, delay: float, every: float = 0.5) -> None:
        self.delay = delay
        self.every = every
        self._samples: deque[tuple[float, dict[str, Any]]] = deque()

    def record(self, now: float, take: Callable[[], dict[str, Any]]) -> None:
        """Sample the state (``take``) when the last sample is ``every`` old."""
        samples = self._samples
        if samples and now - samples[-1][0] < self.every:
            return
        samples.append((now, take()))
        # Keep the newest sample at least ``delay`` old, and what is younger.
        while len(samples) > 1 and now - samples[1][0] >= self.delay:
            samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def as_of(self, now: float) -> dict[str, Any] | None:
        """The newest sample at least ``delay`` old; before the first such sample (the
        demo just started), the oldest there is: the world as it began. None: no sample."""
        samples = self._samples
        if not samples:
            return None
        best = samples[0][1]
        for t, snap in samples:
            if now - t < self.delay:
                break
            best = snap
        return best


__all__ = ["DelayedState"]
