"""The Redis broker on a Redis Cluster, and blocking stream reads against sharded pub/sub
(numbers for docs/scaling.md).

Starts its own Redis Cluster on free loopback ports (3 masters with one replica each:
tests/redis_cluster.py), then measures:

1. The broker (``redis+cluster://``): ``--events`` publishes one after another, spread
   over the five streams (and so over the shards), with REALTIME_REDIS_MIN_REPLICAS 0
   and 1: publish latency (call to acknowledgement) and publish->deliver latency through
   an instance's readers (one blocking ``XREAD`` per stream).
2. The delivery mechanism alone, same payload, same cluster: ``XADD`` -> ``XREAD BLOCK``
   (one reader per stream, as the broker) against ``SPUBLISH`` -> ``SSUBSCRIBE`` (one
   subscriber connection per master), sequentially (latency) and with 8 concurrent
   publishers (messages per second, and the nodes' CPU per message); and both in one
   script (``XADD`` + ``SPUBLISH``: what a pub/sub broker would still have to write).

    .venv/bin/python scripts/bench_cluster.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from tests.redis_cluster import RedisClusterSet

from football_realtime.brokers import PublishedEvent
from football_realtime.brokers.redis import RedisBroker, _keys
from football_realtime.brokers.redis_cluster import cluster_client, parse_cluster_url
from football_realtime.core.events import SubscriptionType

STREAMS = list(SubscriptionType)
ENVELOPES: dict[SubscriptionType, dict[str, Any]] = {
    SubscriptionType.MATCHES: {
        "event_type": "match_score_changed",
        "data": {"match_id": 1, "home_score": 1, "away_score": 0, "minute": 10, "league": "英超"},
    },
    SubscriptionType.PREDICTIONS: {
        "event_type": "prediction_created",
        "data": {"prediction_id": 1, "match_id": 1, "confidence": 0.7},
    },
    SubscriptionType.ODDS: {
        "event_type": "odds_updated",
        "data": {"match_id": 1, "bookmaker": "bet365", "home_odds": 1.5, "draw_odds": 3.4},
    },
    SubscriptionType.SYSTEM_ALERTS: {
        "event_type": "system_alert",
        "data": {"level": "info", "message": "hello"},
    },
    SubscriptionType.ANALYTICS: {
        "event_type": "analytics_updated",
        "data": {"metric": "active_users", "value": 42},
    },
}
#: What a broker with sharded pub/sub would run: the stream stays (history, recovery),
#: the readers are told by SPUBLISH (channel named like the key: one slot).
XADD_SPUBLISH = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 't', ARGV[1], 'p', ARGV[2])
return redis.call('SPUBLISH', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
"""
STAMP = "2025-10-29T20:25:00Z"
PAYLOAD = b"x" * 220  # about an envelope's size


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(xs) * 1000, 2),
        "p99_ms": pct(xs, 0.99),
        "max_ms": round(max(xs) * 1000, 2),
    }


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def broker_run(url: str, n: int, min_replicas: int) -> dict[str, Any]:
    sent: dict[tuple[SubscriptionType, int], float] = {}
    delivered: dict[tuple[SubscriptionType, int], float] = {}

    def deliver(ev: PublishedEvent) -> None:  # (may run before publish() returns)
        delivered[(ev.stream, ev.offset)] = time.perf_counter()

    reader = RedisBroker(url, history_size=n, history_ttl=600, min_replicas=min_replicas)
    await reader.start(deliver)
    pub = RedisBroker(url, history_size=n, history_ttl=600, reader=False, min_replicas=min_replicas)
    for st in STREAMS:  # warm up: topology, connections, scripts
        await pub.publish(dict(ENVELOPES[st], timestamp=STAMP), st, None)
    publish: list[float] = []
    for i in range(n):
        st = STREAMS[i % len(STREAMS)]
        t0 = time.perf_counter()
        res = await pub.publish(dict(ENVELOPES[st], timestamp=STAMP), st, None)
        publish.append(time.perf_counter() - t0)
        sent[(st, res.offset)] = t0
    deadline = time.monotonic() + 10
    while not sent.keys() <= delivered.keys() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    lat = [delivered[k] - t0 for k, t0 in sent.items() if k in delivered]
    await pub.stop()
    await reader.stop()
    return {
        "min_replicas": min_replicas,
        "delivered": f"{len(lat)} of {n}",
        "publish": summary(publish),
        "publish_to_deliver": summary(lat),
    }


async def mechanism_run(
    cluster: RedisClusterSet, n: int, publishers: int, mode: str
) -> dict[str, Any]:
    """``mode`` "xread": XADD -> one XREAD BLOCK per stream; "spubsub": SPUBLISH -> one
    SSUBSCRIBE connection per master; "xadd+spubsub": both in one script, SSUBSCRIBE."""
    client: RedisCluster = cluster_client(parse_cluster_url(cluster.url()))
    await client.initialize()
    keys = {st: _keys(st)[1] + ":bench" for st in STREAMS}
    lat: list[float] = []
    stop = asyncio.Event()
    ready: list[bool] = []

    async def xreader(st: SubscriptionType) -> None:
        last = "0-0"  # the keys are deleted before and after each run
        ready.append(True)
        while not stop.is_set():
            resp: Any = await client.xread({keys[st]: last}, count=1000, block=200)
            now = time.perf_counter()
            for _, entries in resp or []:
                for entry_id, fields in entries:
                    last = entry_id
                    lat.append(now - float(fields[b"t"]))

    async def subscriber(port: int, channels: list[str]) -> None:
        r = Redis(host="127.0.0.1", port=port)
        ps = r.pubsub()
        for ch in channels:  # one SSUBSCRIBE per channel: each is its own slot
            await ps.execute_command("SSUBSCRIBE", ch)
        confirmed = 0
        while confirmed < len(channels):
            msg = await ps.get_message(timeout=1.0)
            if msg and msg["type"] == "ssubscribe":
                confirmed += 1
        ready.append(True)
        while not stop.is_set():
            msg = await ps.get_message(timeout=0.2)
            now = time.perf_counter()
            if msg and msg["type"] == "smessage":
                lat.append(now - float(msg["data"].split(b"|", 1)[0]))
        await ps.aclose()
        await r.aclose()

    for st in STREAMS:
        await client.delete(keys[st])
    if mode == "xread":
        tasks = [asyncio.create_task(xreader(st)) for st in STREAMS]
        want = len(STREAMS)
    else:
        by_node: dict[int, list[str]] = {}
        for st in STREAMS:
            by_node.setdefault(cluster.master_of(keys[st]), []).append(keys[st])
        tasks = [asyncio.create_task(subscriber(p, chs)) for p, chs in by_node.items()]
        want = len(by_node)
    while len(ready) < want:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the XREADs are blocked, the SSUBSCRIBEs confirmed
    pids = [n.proc.pid for n in cluster.live() if n.proc is not None]
    per = n // publishers

    async def publisher(k: int) -> None:
        for i in range(per):
            st = STREAMS[(k + i) % len(STREAMS)]
            t = repr(time.perf_counter())
            if mode == "xread":
                await client.xadd(keys[st], {"t": t, "p": PAYLOAD}, maxlen=1000, approximate=True)
            elif mode == "spubsub":
                await client.execute_command("SPUBLISH", keys[st], t.encode() + b"|" + PAYLOAD)
            else:  # the stream kept for history, the event pushed by SPUBLISH (one script)
                await client.eval(XADD_SPUBLISH, 1, keys[st], t, PAYLOAD)
            if publishers == 1:
                await asyncio.sleep(0.001)  # one at a time: latency, not queueing

    cpu0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    await asyncio.gather(*(publisher(k) for k in range(publishers)))
    deadline = time.monotonic() + 10
    while len(lat) < per * publishers and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pids) - cpu0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for st in STREAMS:
        await client.delete(keys[st])
    await client.aclose()
    total = per * publishers
    return {
        "mode": mode,
        "publishers": publishers,
        "messages": total,
        "delivered": len(lat),
        "reader_connections": want,
        "delivered_per_second": round(len(lat) / elapsed),
        "redis_cpu_us_per_message": round(cpu / total * 1e6, 1),
        **summary(lat),
    }


async def main_async(events: int) -> None:
    with RedisClusterSet() as cluster:
        url = cluster.url()
        print(
            "shards of the streams:", {st.value: cluster.master_of(_keys(st)[1]) for st in STREAMS}
        )
        for mr in (0, 1):
            print(await broker_run(url, events, mr))
        for publishers in (1, 8):
            for mode in ("xread", "spubsub", "xadd+spubsub"):
                n = events if publishers == 1 else events * 5
                print(await mechanism_run(cluster, n, publishers, mode))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    asyncio.run(main_async(args.events))


if __name__ == "__main__":
    main()
