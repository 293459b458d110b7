"""Bytes on the wire per delivered event on the demo's event mix: plain, compressed
(shared permessage-deflate), and compressed with batching; and a recovery of 1,000
events the same three ways.

The events are the demo's own (``football_realtime.demo.simulation``, seeded): the
simulation is stepped minute by minute as ``football-realtime demo`` does (``--steps``
match minutes; 300 = 10 minutes of the demo at its default 30x speed), every event is
published through the memory broker (envelope, stream, offset: the bytes a client
gets), and fanned out by the service's hub to in-memory connections that record the
frames they write: the frames are the server's, byte for byte (WebSocket frame
headers included; TCP/IP headers not). Batching: a ``batch=1`` connection whose socket
is behind for one simulated minute at a time, so what queued in that minute goes out
as batch frames (at most 64 KiB each); a client that keeps up gets one frame per event.

    python bench/wire_bytes.py [--steps 300] [--seed 7] [--tier premium|free]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from football_realtime.brokers.base import PublishedEvent
from football_realtime.brokers.memory import MemoryBroker
from football_realtime.config import DEFAULT_TIERS, Settings
from football_realtime.core.events import SubscriptionType, prepare_envelope
from football_realtime.core.permissions import TierPolicy
from football_realtime.core.subscriptions import SubscriptionFilter
from football_realtime.demo.simulation import SimConfig, Simulation
from football_realtime.service.connection import Connection, SharedDeflate
from football_realtime.service.hub import Hub
from football_realtime.service.views import TierViews
from football_realtime.stats import ServiceStats


class Recorder:
    """A sink that keeps the frames written to it (the socket, minus the kernel)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writable = True
        self.direct = self.frames.append

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def wake(self) -> None:
        pass

    def close(self, code: int, reason: str, abort: bool) -> None:
        pass


def messages(frames: list[bytes]) -> int:
    """Events carried by ``frames`` (a batch frame holds several), inflating compressed ones."""
    n = 0
    for f in frames:
        ln = f[1] & 0x7F
        body = f[4:] if ln == 126 else f[10:] if ln == 127 else f[2:]
        if f[0] & 0x40:
            body = zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
        msg = orjson.loads(body)
        n += len(msg) if isinstance(msg, list) else 1
    return n


async def demo_events(steps: int, seed: int) -> tuple[list[list[PublishedEvent]], list[str]]:
    wall = [datetime(2026, 12, 3, 12, 0, tzinfo=UTC)]
    sim = Simulation(SimConfig(), random.Random(seed), lambda: wall[0])
    broker = MemoryBroker(history_size=1_000_000, history_ttl=1e9)
    out: list[PublishedEvent] = []
    await broker.start(out.append)
    minutes: list[list[PublishedEvent]] = []
    for i in range(steps + 1):
        events = sim.start() if i == 0 else sim.step()
        wall[0] += timedelta(seconds=SimConfig().seconds_per_minute)
        start = len(out)
        for event in events:
            envelope, stream = prepare_envelope(event)
            await broker.publish(envelope, stream, None)
        minutes.append(out[start:])
    await broker.stop()
    return minutes, [ev.event_type.value for m in minutes for ev in m]


def run(minutes: list[list[PublishedEvent]], tier: str, min_bytes: int) -> dict[str, Any]:
    policy = TierPolicy.from_config(DEFAULT_TIERS, "free")
    hub = Hub(
        ServiceStats(), max_subscriptions=10, max_rooms=1, render_view=TierViews(policy).render
    )
    deflate = SharedDeflate(min_bytes)
    view = None if tier == "premium" else tier
    sinks: dict[str, Recorder] = {}
    conns: dict[str, Connection] = {}
    for name, d, batch in (
        ("plain", None, False),
        ("deflate", deflate, False),
        ("deflate+batch", deflate, True),
        ("plain+batch", None, True),
    ):
        sink = sinks[name] = Recorder()
        conn = conns[name] = Connection(name, None, None, sink, 1 << 30, batch=batch, deflate=d)
        conn.view = view
        hub.add(conn)
        for stream in SubscriptionType:
            hub.subscribe(conn, stream, SubscriptionFilter())
    for minute in minutes:
        for name in ("deflate+batch", "plain+batch"):
            conns[name].writable_changed(False)
        for ev in minute:
            hub.deliver(ev)
        for name in ("deflate+batch", "plain+batch"):
            conns[name].writable_changed(True)
    result = {}
    for name, sink in sinks.items():
        result[name] = (sum(map(len, sink.frames)), len(sink.frames), messages(sink.frames))
    return result


def recovery(minutes: list[list[PublishedEvent]], n: int, min_bytes: int) -> dict[str, Any]:
    """A client that reconnects with ``since`` and is replayed ``n`` events: one frame each
    while its socket keeps up, or batched when it is behind (``batch=1``)."""
    events = [ev for m in minutes for ev in m][-n:]
    hub = Hub(ServiceStats(), max_subscriptions=10, max_rooms=1)
    deflate = SharedDeflate(min_bytes)
    result = {}
    for name, d, batch in (
        ("plain", None, False),
        ("deflate", deflate, False),
        ("plain+batch", None, True),
        ("deflate+batch", deflate, True),
    ):
        sink = Recorder()
        conn = Connection(name, None, None, sink, 1 << 30, batch=batch, deflate=d)
        hub.add(conn)
        if batch:
            conn.writable_changed(False)
        for ev in events:
            hub.send_event(conn, ev)
        if batch:
            conn.writable_changed(True)
        result[name] = (sum(map(len, sink.frames)), len(sink.frames), messages(sink.frames))
    return result


def table(res: dict[str, Any], offered: int) -> None:
    plain = res["plain"][0]
    print("| mode | frames | events in them | bytes | bytes/event offered | vs plain |")
    print("|---|---|---|---|---|---|")
    for name in ("plain", "deflate", "plain+batch", "deflate+batch"):
        b, f, m = res[name]
        print(f"| {name} | {f:,} | {m:,} | {b:,} | {b / offered:.1f} | {b / plain:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="simulated match minutes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--replay", type=int, default=1000, help="events in the recovery")
    a = ap.parse_args()
    min_bytes = Settings().compression_min_bytes
    minutes, types = asyncio.run(demo_events(a.steps, a.seed))
    total = len(types)
    print(
        f"demo mix: {total} events over {a.steps} match minutes (seed {a.seed}); "
        f"REALTIME_COMPRESSION_MIN_BYTES={min_bytes}"
    )
    print("types: " + ", ".join(f"{t} {c}" for t, c in Counter(types).most_common()))
    for tier in ("premium", "free"):
        res = run(minutes, tier, min_bytes)
        print(f"\n{tier} viewer, live (subscribed to every stream; the tier's view):")
        table(res, res["plain"][2])
    rec = recovery(minutes, a.replay, min_bytes)
    print(
        f"\nrecovery of {a.replay} events (premium); +batch: the socket is behind for the "
        "whole replay, so odds are conflated (latest per match and bookmaker) and the rest "
        "batched:"
    )
    table(rec, a.replay)


if __name__ == "__main__":
    main()
