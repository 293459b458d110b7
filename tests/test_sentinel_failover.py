"""Redis Sentinel: failover with publishing in flight, and REALTIME_REDIS_MIN_REPLICAS.

Real processes only: a Sentinel set (1 master, 2 replicas, 3 sentinels with
down-after-milliseconds 1000 and failover-timeout 5000; tests/redis_sentinel.py),
`football-realtime serve` instances on its ``redis+sentinel://`` URL, the standalone
``Publisher`` and the Python client, all on free loopback ports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from football_realtime.brokers import BrokerUnavailable
from football_realtime.client import Event, RealtimeClient, RecoveryFailed
from football_realtime.publisher import Publisher

from .client_support import FAST, score
from .cluster_support import Follower, instances
from .redis_sentinel import SentinelSet
from .support import TIMEOUT

pytestmark = pytest.mark.timeout(60)

#: Publishing must resume this soon after the master's SIGKILL (Sentinel's detection,
#: 1 s down-after, election, promotion and the clients' reconnect included).
RESUME_WITHIN = 10.0


class Collector:
    """Everything a RealtimeClient yields, gathered by a background task."""

    def __init__(self, client: RealtimeClient) -> None:
        self.items: list[Any] = []
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: RealtimeClient) -> None:
        async for item in client:
            self.items.append(item)

    def events(self) -> list[Event[Any]]:
        return [it for it in self.items if isinstance(it, Event) and it.offset is not None]

    def failures(self) -> list[RecoveryFailed]:
        return [it for it in self.items if isinstance(it, RecoveryFailed)]

    async def wait(self, cond: Any, timeout: float = TIMEOUT * 2) -> None:
        async with asyncio.timeout(timeout):
            while not cond():  # noqa: ASYNC110 - filled by the collector task
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_failover_with_publishing_in_flight_loses_no_acknowledged_event() -> None:
    with (
        SentinelSet() as sentinels,
        instances(["x"], sentinels.url(), REALTIME_REDIS_MIN_REPLICAS="1") as (x,),
    ):
        async with (
            Publisher(sentinels.url(), min_replicas=1) as pub,
            RealtimeClient(x.ws_url, **FAST) as client,
        ):
            await client.subscribe("matches", match_ids=[1])
            got = Collector(client)
            acked: list[tuple[int, int]] = []  # (seq, offset)
            retried_ok: list[float] = []  # when a publish that had failed succeeded
            failures = 0

            async def publisher(total: int) -> None:
                nonlocal failures
                for seq in range(total):
                    failed = False
                    while True:
                        try:
                            res = await pub.publish(score(1, home=seq), idempotency_key=f"s{seq}")
                            break
                        except BrokerUnavailable:
                            failed = True
                            failures += 1
                            await asyncio.sleep(0.05)
                    if failed:
                        retried_ok.append(time.monotonic())
                    acked.append((seq, res.offset))

            total = 200
            task = asyncio.create_task(publisher(total))
            async with asyncio.timeout(TIMEOUT):
                while len(acked) < 60:  # noqa: ASYNC110 - filled by the publisher task
                    await asyncio.sleep(0.005)
            old = await asyncio.to_thread(sentinels.kill_master)  # mid-stream
            killed_at = sentinels.killed_at
            assert killed_at is not None
            new = await asyncio.to_thread(sentinels.wait_new_master, old)
            assert new != old
            await asyncio.wait_for(task, RESUME_WITHIN + TIMEOUT)
            assert failures > 0 and retried_ok, "the kill did not interrupt publishing"
            resumed_after = retried_ok[0] - killed_at
            print(f"failover: publishing resumed {resumed_after:.2f} s after the kill")
            assert resumed_after < RESUME_WITHIN

            # Offsets: one per event, gapless, in publish order (idempotent retries kept
            # each event at one offset).
            assert [o for _, o in acked] == list(range(acked[0][1], acked[0][1] + total))
            await got.wait(lambda: len(got.events()) >= total)
            await asyncio.sleep(0.2)  # nothing more may arrive
            events = got.events()
            assert [e.data.home_score for e in events] == list(range(total))
            assert [e.offset for e in events] == [o for _, o in acked]
            assert got.failures() == []
            await got.stop()
        health = x.get("/realtime/health").json()
        assert health["broker_healthy"] is True and health["broker"] == "redis-sentinel"


async def test_min_replicas_refuses_a_publish_no_replica_acknowledges() -> None:
    with (
        SentinelSet() as sentinels,
        instances(["x"], sentinels.url(), REALTIME_REDIS_MIN_REPLICAS="1") as (x,),
    ):
        f = Follower("matches")
        await f.connect(x.ws_url)
        r = await asyncio.to_thread(x.broadcast, score(1, home=0))
        assert r.status_code == 200, r.text
        await f.wait_offset("matches", r.json()["offset"])

        await asyncio.to_thread(sentinels.stop_replicas)  # SIGSTOP: they answer nothing
        try:
            t0 = time.monotonic()
            r = await asyncio.to_thread(x.broadcast, score(1, home=1), **{"Idempotency-Key": "k1"})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            detail = r.json()["detail"]
            assert "only 0 of 1 replicas acknowledged" in detail, detail
            assert time.monotonic() - t0 < 1.0 + TIMEOUT
            # The refused event is not delivered while no replica holds it.
            await asyncio.sleep(0.3)
            assert f.offsets("matches") == [1]
        finally:
            await asyncio.to_thread(sentinels.resume_replicas)
        # The retry with the same key is answered once a replica holds the event: the
        # original offset, delivered exactly once.
        deadline = time.monotonic() + TIMEOUT * 2
        while True:
            r = await asyncio.to_thread(x.broadcast, score(1, home=1), **{"Idempotency-Key": "k1"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 200, r.text
        assert r.json()["offset"] == 2 and r.json()["duplicate"] is True
        await f.wait_offset("matches", 2)
        r = await asyncio.to_thread(x.broadcast, score(1, home=2))
        assert r.status_code == 200 and r.json()["offset"] == 3, r.text
        await f.wait_offset("matches", 3)
        assert f.offsets("matches") == [1, 2, 3]
        assert [e["data"]["home_score"] for e in f.events] == [0, 1, 2]
        assert not f.close_codes
        await f.close()
