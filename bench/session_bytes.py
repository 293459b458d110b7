"""Bytes one durable session holds in Redis (docs/performance.md, Durable sessions).

Starts a throwaway ``redis-server`` on a free port, stores sessions of three sizes through
the Redis broker's ``StoresSessions`` ability exactly as the service does (one subscription
to ``matches`` with one acknowledged position, as the benchmark's subscribers; a dashboard's
three filtered subscriptions; a session at ``REALTIME_SESSION_MAX_SUBSCRIPTIONS``), and
prints the stored value's length and Redis' ``MEMORY USAGE`` for its key and for the
owner's index.

    python bench/session_bytes.py
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time

from redis import Redis

from football_realtime.brokers.redis import RedisBroker
from football_realtime.brokers.redis_layout import owner_key, session_key
from football_realtime.core.events import SubscriptionType
from football_realtime.core.session_state import SessionState, SubscriptionSpec, new_session_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sessions() -> dict[str, SessionState]:
    one = SessionState(new_session_id(), "bench-user-1")
    one.subscriptions["sub_1"] = SubscriptionSpec("matches", {})
    one.positions[SubscriptionType.MATCHES] = ("6644d545e157", 123456)
    dash = SessionState(new_session_id(), "viewer-premium-1a2b3c")
    dash.subscriptions["sub_1"] = SubscriptionSpec("matches", {"leagues": ["英超", "西甲"]})
    dash.subscriptions["sub_2"] = SubscriptionSpec(
        "predictions", {"match_ids": list(range(1001, 1011)), "min_confidence": 0.7}
    )
    dash.subscriptions["sub_3"] = SubscriptionSpec("odds", {"match_ids": list(range(1001, 1011))})
    for st in (SubscriptionType.MATCHES, SubscriptionType.PREDICTIONS, SubscriptionType.ODDS):
        dash.positions[st] = ("6644d545e157", 123456)
    big = SessionState(new_session_id(), "bench-user-2")
    for i in range(64):
        big.subscriptions[f"sub_{i}"] = SubscriptionSpec("matches", {"match_ids": [10_000 + i]})
    big.positions[SubscriptionType.MATCHES] = ("6644d545e157", 123456)
    return {"1 subscription (bench)": one, "3 filtered (dashboard)": dash, "64 subscriptions": big}


async def main() -> None:
    if shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL,
        )
        try:
            r = Redis(port=port)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except Exception:
                    time.sleep(0.05)
            broker = RedisBroker(f"redis://127.0.0.1:{port}/0", history_size=10, history_ttl=60)
            print("| session | stored JSON bytes | MEMORY USAGE of the key | owner index |")
            print("|---|---|---|---|")
            for name, st in sessions().items():
                await broker.save_session(st.id, st.encode(), 900.0, st.owner)
                key_bytes = r.memory_usage(session_key(st.id), samples=0)
                idx = r.memory_usage(owner_key(st.owner), samples=0) if st.owner else 0
                print(f"| {name} | {r.strlen(session_key(st.id))} | {key_bytes} | {idx} |")
            await broker.redis.aclose()
        finally:
            proc.terminate()
            proc.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
