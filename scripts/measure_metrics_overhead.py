"""What the metrics cost: per event on the fan-out path, per client message, per scrape.

    python scripts/measure_metrics_overhead.py

In-process and synthetic (sinks that drop bytes), so it isolates our code from the
kernel; the end-to-end figures with real sockets are in docs/performance.md.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from football_realtime.app import Realtime
from football_realtime.brokers.base import PublishedEvent
from football_realtime.config import Settings
from football_realtime.core.events import EventType, SubscriptionType
from football_realtime.core.subscriptions import SubscriptionFilter
from football_realtime.service.connection import Connection, Encoded


class NullSink:
    writable = True

    def item(self, enc: Encoded) -> bytes:
        return enc.frame

    def write(self, item: bytes) -> None:
        pass

    def wake(self) -> None:
        pass

    def close(self, code: int, reason: str, abort: bool) -> None:
        pass


def realtime_with(n: int) -> Realtime:
    rt = Realtime(Settings(admin_token="x"))
    for i in range(n):
        conn = Connection(f"c{i}", f"u{i}", None, NullSink(), 1 << 20)
        rt.hub.add(conn)
        rt.hub.subscribe(conn, SubscriptionType.MATCHES, SubscriptionFilter())
    return rt


def event(offset: int) -> PublishedEvent:
    data: dict[str, Any] = {"match_id": 1, "home_score": 1, "away_score": 0, "minute": 3}
    env = {"event_type": "match_score_changed", "data": data, "stream": "matches", "offset": offset}
    return PublishedEvent(
        SubscriptionType.MATCHES,
        offset,
        EventType.MATCH_SCORE_CHANGED,
        data,
        orjson.dumps(env),
        time.time(),
    )


def per_call(fn: Any, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    for subs, n in ((0, 20000), (1000, 300), (10000, 30)):
        rt = realtime_with(subs)
        evs = [event(i) for i in range(n)]
        bare = full = float("inf")
        for _ in range(4):  # interleaved, best of each: the machine is shared
            bare = min(bare, per_call(lambda i, rt=rt, evs=evs: rt.hub.deliver(evs[i]), n))
            full = min(full, per_call(lambda i, rt=rt, evs=evs: rt.on_event(evs[i]), n))
        print(
            f"{subs:>6} subscribers: hub.deliver {bare:9.2f} µs/event, "
            f"Realtime.on_event (metrics + log context) {full:9.2f} µs/event, "
            f"overhead {full - bare:5.2f} µs/event"
        )
    st = Realtime(Settings(admin_token="x")).stats

    def inline(i: int) -> None:
        st.messages_received += 1
        st.bytes_received += 120

    print(
        f"client message: counters only {per_call(inline, 200000):.3f} µs, "
        f"record_received (with size histogram) {per_call(lambda i: st.record_received(120), 200000):.3f} µs"
    )
    from prometheus_client import generate_latest

    for n in (10000, 100000):
        rt = realtime_with(n)
        t = per_call(lambda i, rt=rt: generate_latest(rt.metrics_registry), 3)
        print(f"scrape with {n} connections: {t / 1000:.1f} ms")


if __name__ == "__main__":
    main()
