"""Rate limiting for one connection: a token bucket with a count of refusals. No I/O.

The caller passes the time (``loop.time()``), so tests drive it without sleeping.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, up to ``burst``; each message takes one.

    ``violations`` counts refused messages since the last accepted one: the
    transport answers each refusal with ``rate_limited`` and closes the connection
    (1008) once ``violations`` passes its limit, so a client that keeps flooding after
    being told to slow down is cut off, while a burst that backs off is forgiven.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate", "violations")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now
        self.violations = 0

    def take(self, now: float) -> bool:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.violations = 0
            return True
        self.violations += 1
        return False


__all__ = ["TokenBucket"]
