"""Publish latency on a Sentinel set with REALTIME_REDIS_MIN_REPLICAS 0 and 1, and the
failover time (numbers for docs/scaling.md).

Starts its own Sentinel set on free loopback ports (1 master, 2 replicas, 3 sentinels:
tests/redis_sentinel.py, down-after-milliseconds 1000, failover-timeout 5000), then for
each MIN_REPLICAS value publishes ``--events`` events one after another through the
standalone Publisher (``redis+sentinel://`` URL) while an instance's reader delivers
them, and reports publish latency (call to acknowledgement) and publish->deliver latency
(p50, p99, max). Last, it SIGKILLs the master while publishing with MIN_REPLICAS=1 and
reports how long after the kill publishing resumed.

    .venv/bin/python scripts/bench_sentinel.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from football_realtime.brokers import BrokerUnavailable, PublishedEvent  # noqa: E402
from football_realtime.brokers.redis import RedisBroker  # noqa: E402
from football_realtime.publisher import Publisher  # noqa: E402
from tests.redis_sentinel import SentinelSet  # noqa: E402


def event(i: int) -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {"match_id": 1 + i % 50, "home_score": i, "away_score": 0, "minute": i % 90},
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, ms: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(ms):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} "
        f"| {len(ms)} |"
    )


async def latency(url: str, n: int, min_replicas: int) -> tuple[list[float], list[float]]:
    started: dict[int, float] = {}
    delivered: dict[int, float] = {}
    done = asyncio.Event()

    def deliver(ev: PublishedEvent) -> None:
        i = int(ev.data["home_score"])
        if i in started and i not in delivered:
            delivered[i] = time.perf_counter()
            if len(delivered) == n:
                done.set()

    reader = RedisBroker(url, history_size=n, history_ttl=600, min_replicas=min_replicas)
    await reader.start(deliver)
    publish_ms: list[float] = []
    async with Publisher(url, history_size=n, min_replicas=min_replicas) as pub:
        for i in range(50):  # warm up: connections, script cache
            await pub.publish(event(10**6 + i))
        for i in range(n):
            t0 = started[i] = time.perf_counter()
            await pub.publish(event(i))
            publish_ms.append((time.perf_counter() - t0) * 1000)
    await asyncio.wait_for(done.wait(), 30)
    await reader.stop()
    deliver_ms = [(delivered[i] - started[i]) * 1000 for i in range(n)]
    return publish_ms, deliver_ms


async def failover(sentinels: SentinelSet, url: str) -> float:
    async with Publisher(url, min_replicas=1) as pub:
        killed_at = 0.0
        i = 0
        while True:
            if i == 100 and not killed_at:
                await asyncio.to_thread(sentinels.kill_master)
                assert sentinels.killed_at is not None
                killed_at = sentinels.killed_at
            try:
                await pub.publish(event(i), idempotency_key=f"f{i}")
            except BrokerUnavailable:
                await asyncio.sleep(0.05)
                continue
            if killed_at and i > 100:
                return time.monotonic() - killed_at
            i += 1


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    with SentinelSet() as sentinels:
        url = sentinels.url()
        print(f"Sentinel set: master :{sentinels.master.port}, 2 replicas, 3 sentinels; {url}")
        print(f"{args.events} sequential publishes per row, latency in ms\n")
        print("| MIN_REPLICAS, measure | p50 | p99 | max | n |")
        print("|---|---|---|---|---|")
        for n_rep in (0, 1):
            await asyncio.to_thread(sentinels.flushall)
            pub_ms, del_ms = await latency(url, args.events, n_rep)
            print(row(f"{n_rep}, publish (call to ack)", pub_ms))
            print(row(f"{n_rep}, publish -> deliver", del_ms))
        resumed = await failover(sentinels, url)
        print(f"\nmaster SIGKILLed while publishing (MIN_REPLICAS=1): publishing resumed "
              f"{resumed:.2f} s after the kill")


if __name__ == "__main__":
    asyncio.run(main())
