"""Bounded loopback benchmark of the Redis broker (numbers for docs/scaling.md).

Starts its own redis-server on a free port (never 6379) in a temp dir, then measures:
publish throughput (concurrent publishers through the Lua script), delivery to several
instance readers (XREAD) with publish->deliver latency, and Redis memory per event of
history. Bounded in count and time.

    .venv/bin/python scripts/bench_broker.py [--events 20000] [--readers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from football_realtime.brokers.base import PublishedEvent
from football_realtime.brokers.redis import RedisBroker
from football_realtime.publisher import prepare_envelope

LIMIT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(i: int) -> dict[str, Any]:
    return {
        "event_type": "odds_updated",
        "data": {
            "match_id": 1000 + i % 200,
            "league": "英超",
            "bookmaker": "bet365",
            "home_odds": 1.5 + (i % 50) / 100,
            "draw_odds": 3.4,
            "away_odds": 5.1,
        },
    }


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(n: int, readers: int, publishers: int, url: str, pid: int) -> dict[str, Any]:
    got: list[list[float]] = [[] for _ in range(readers)]
    brokers = []
    for k in range(readers):
        b = RedisBroker(url, history_size=n, history_ttl=600)

        def deliver(ev: PublishedEvent, sink: list[float] = got[k]) -> None:
            sink.append(time.time() - ev.published_at)

        await b.start(deliver)
        brokers.append(b)
    pub = RedisBroker(url, history_size=n, history_ttl=600, reader=False)
    r = Redis.from_url(url)
    mem0 = int((await r.info("memory"))["used_memory"])
    envelopes = [prepare_envelope(event(i)) for i in range(n)]
    per = n // publishers
    deadline = time.monotonic() + LIMIT_SECONDS

    async def publisher(k: int) -> None:
        for env, stream in envelopes[k * per : (k + 1) * per]:
            if time.monotonic() > deadline:
                return
            await pub.publish(dict(env), stream, None)

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(publisher(k) for k in range(publishers)))
    t_pub = time.perf_counter() - t0
    total = per * publishers
    while min(len(g) for g in got) < total and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    t_all = time.perf_counter() - t0
    redis_cpu = cpu_seconds(pid) - cpu0
    mem1 = int((await r.info("memory"))["used_memory"])
    lat = sorted(x for g in got for x in g)
    for b in [*brokers, pub]:
        await b.stop()
    await r.aclose()
    return {
        "events": total,
        "publishers": publishers,
        "readers": readers,
        "publish_per_second": round(total / t_pub),
        "delivered_per_reader_per_second": round(total / t_all),
        "latency_ms_p50": round(statistics.median(lat) * 1000, 2),
        "latency_ms_p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
        "redis_bytes_per_event": round((mem1 - mem0) / total),
        "payload_bytes": len(orjson.dumps(envelopes[1][0])),
        "redis_cpu_us_per_event": round(redis_cpu / total * 1e6, 1),
        # One Redis core, this many publishes/s with these readers (CPU bound estimate).
        "redis_core_events_per_second_estimate": round(total / redis_cpu) if redis_cpu else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--publishers", type=int, default=8)
    args = ap.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="frt-bench-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            tmp,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        result = asyncio.run(
            run(args.events, args.readers, args.publishers, f"redis://127.0.0.1:{port}/0", proc.pid)
        )
        result["cpus"] = os.cpu_count()
        for k, v in result.items():
            print(f"{k}: {v}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
