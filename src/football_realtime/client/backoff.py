"""Reconnect delays: exponential backoff with full jitter. Pure: no I/O, no clock.

The policy is centrifuge-js's: for the ``n``-th consecutive failed attempt
(``n >= 1``) the delay is ``min(max_delay, min_delay + U(0, min(max_delay,
min_delay * 2**(n-1))))``. So every delay lies in ``[min_delay, max_delay]``,
the upper bound doubles per attempt until it reaches ``max_delay``, and a crowd of
clients dropped together spreads out instead of reconnecting in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_EXPONENT = 31  # 2**31 * any sane min_delay is far past any max_delay


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnect attempts, in seconds."""

    min_delay: float = 0.5
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if not self.min_delay >= 0:
            raise ValueError("min_delay must be >= 0")
        if not self.max_delay >= self.min_delay:
            raise ValueError("max_delay must be >= min_delay")

    def upper_bound(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th consecutive failure can draw."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        spread = self.min_delay * float(2 ** min(attempt - 1, _MAX_EXPONENT))
        return min(self.max_delay, self.min_delay + min(self.max_delay, spread))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before the next attempt; ``rand`` returns a float in [0, 1)."""
        lo = self.min_delay
        return lo + rand() * (self.upper_bound(attempt) - lo)
