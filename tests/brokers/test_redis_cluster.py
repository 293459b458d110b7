"""Redis Cluster (``redis+cluster://``): streams spread over the shards, one reader per
stream, the cluster registry, and a shard's failover with publishing in flight.

Real processes only: a Redis Cluster of 3 masters with replicas (tests/redis_cluster.py,
``cluster-node-timeout`` 1000 ms), `football-realtime serve` instances on its URL, the
standalone ``Publisher`` and the Python client, all on free loopback ports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from football_realtime.brokers import BrokerUnavailable, PublishedEvent
from football_realtime.brokers.redis import RedisBroker
from football_realtime.brokers.redis_cluster import ClusterURL, parse_cluster_url
from football_realtime.brokers.redis_layout import stream_keys
from football_realtime.client import RealtimeClient
from football_realtime.core.events import SubscriptionType
from football_realtime.publisher import Publisher

from ..client_support import FAST, score
from ..cluster_support import Follower, instances
from ..redis_cluster import RedisClusterSet
from ..support import ADMIN, TIMEOUT, admin_headers
from .test_sentinel_failover import RESUME_WITHIN, Collector

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet() as c:
        yield c


def test_cluster_url() -> None:
    assert parse_cluster_url("redis+cluster://h1:7000,h2,[::1]:7002") == ClusterURL(
        nodes=(("h1", 7000), ("h2", 6379), ("::1", 7002))
    )
    got = parse_cluster_url("redis+cluster://u%40x:p%3Aw@h:1/0")
    assert (got.username, got.password, got.nodes) == ("u@x", "p:w", (("h", 1),))
    for bad, why in [
        ("redis+cluster://", "no cluster node"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://h:x", "bad cluster node port"),
        ("redis+cluster://h:1?foo=1", "no query options"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_cluster_url(bad)


def _xread_clients(cluster: RedisClusterSet) -> dict[int, int]:
    """Per master port: how many clients block in XREAD there right now."""
    out: dict[int, int] = {}
    for port in cluster.slots():
        clients = redis.Redis(host="127.0.0.1", port=port).client_list()
        out[port] = sum(1 for c in clients if c["cmd"] == "xread")
    return out


async def test_streams_spread_over_shards_one_reader_per_stream(
    cluster: RedisClusterSet,
) -> None:
    await asyncio.to_thread(cluster.flushall)
    streams = list(SubscriptionType)
    shards = {st: cluster.master_of(stream_keys(st)[1]) for st in streams}
    assert len(set(shards.values())) >= 2, shards  # the hash tags spread them
    node = RedisBroker(cluster.url(), history_size=1000, history_ttl=600)
    got: list[PublishedEvent] = []
    await node.start(got.append)
    try:
        # One blocking reader per stream, each on its stream's master.
        want = {port: list(shards.values()).count(port) for port in cluster.slots()}
        async with asyncio.timeout(TIMEOUT):
            while await asyncio.to_thread(_xread_clients, cluster) != want:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        envelopes = {
            SubscriptionType.MATCHES: lambda i: score(1, home=i),
            SubscriptionType.PREDICTIONS: lambda i: {
                "event_type": "prediction_created",
                "data": {"prediction_id": i, "match_id": 1, "confidence": 0.5},
            },
            SubscriptionType.ODDS: lambda i: {
                "event_type": "odds_updated",
                "data": {"match_id": 1, "bookmaker": "b", "home_odds": 2.0 + i},
            },
            SubscriptionType.SYSTEM_ALERTS: lambda i: {
                "event_type": "system_alert",
                "data": {"level": "info", "message": f"m{i}"},
            },
            SubscriptionType.ANALYTICS: lambda i: {
                "event_type": "analytics_updated",
                "data": {"metric": "x", "value": i},
            },
        }
        per = 20
        for i in range(per):  # interleaved over the streams (and so over the shards)
            await asyncio.gather(
                *(node.publish(envelopes[st](i), st, f"{st}-{i}") for st in streams)
            )
        async with asyncio.timeout(TIMEOUT):
            while len(got) < per * len(streams):  # noqa: ASYNC110 - the readers fill it
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(got) == per * len(streams)
        for st in streams:
            assert [e.offset for e in got if e.stream == st] == list(range(1, per + 1)), st
            h = await node.history(st, 0)
            assert h is not None and [e.offset for e in h] == list(range(1, per + 1))
        assert await node.healthy()
    finally:
        await node.stop()


async def test_registry_answers_for_a_connection_on_another_instance(
    cluster: RedisClusterSet,
) -> None:
    await asyncio.to_thread(cluster.flushall)
    with instances(["x", "y"], cluster.url()) as (x, y):
        f = Follower("matches", {"match_ids": [7]})
        await f.connect(x.ws_url)
        cid = f.connection_ids[-1]
        deadline = time.monotonic() + TIMEOUT
        while True:
            r = await asyncio.to_thread(
                y.get, f"/realtime/connections/{cid}", headers=admin_headers(ADMIN)
            )
            # Registered on connect; details refreshed each heartbeat (0.5 s here).
            if r.status_code == 200 and r.json()["subscriptions"]:
                break
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.05)
        info: dict[str, Any] = r.json()
        assert info["instance_id"] == "x" and info["local"] is False
        assert info["subscriptions"][0]["subscription_type"] == "matches"
        stats = (await asyncio.to_thread(y.get, "/realtime/stats")).json()["cluster"]
        assert {i["instance_id"] for i in stats["instances"]} == {"x", "y"}
        assert stats["registry_available"] is True
        # Published through y, delivered by x.
        r = await asyncio.to_thread(y.broadcast, score(7, home=1))
        assert r.status_code == 200, r.text
        await f.wait_offset("matches", r.json()["offset"])
        await f.close()
        health = (await asyncio.to_thread(x.get, "/realtime/health")).json()
        assert health["broker"] == "redis-cluster" and health["broker_healthy"] is True


async def test_shard_failover_with_publishing_in_flight_loses_no_acknowledged_event() -> None:
    """The master of the ``matches`` shard is SIGKILLed mid-stream; its replica is
    promoted (2 replicas per master, so MIN_REPLICAS=1 still holds afterwards)."""
    with (
        RedisClusterSet(replicas=2) as cluster,
        instances(["x"], cluster.url(), REALTIME_REDIS_MIN_REPLICAS="1") as (x,),
    ):
        log_key = stream_keys(SubscriptionType.MATCHES)[1]
        async with (
            Publisher(cluster.url(), min_replicas=1) as pub,
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
            old = cluster.master_of(log_key)
            await asyncio.to_thread(cluster.kill_master, old)  # mid-stream
            killed_at = time.monotonic()
            new = await asyncio.to_thread(cluster.wait_promoted, old, log_key)
            assert new != old
            await asyncio.wait_for(task, RESUME_WITHIN + TIMEOUT)
            assert failures > 0 and retried_ok, "the kill did not interrupt publishing"
            resumed_after = retried_ok[0] - killed_at
            print(f"shard failover: publishing resumed {resumed_after:.2f} s after the kill")
            assert resumed_after < RESUME_WITHIN

            # One offset per event, gapless, in publish order (idempotent retries).
            assert [o for _, o in acked] == list(range(acked[0][1], acked[0][1] + total))
            await got.wait(lambda: len(got.events()) >= total)
            await asyncio.sleep(0.2)  # nothing more may arrive
            events = got.events()
            assert [e.data.home_score for e in events] == list(range(total))
            assert [e.offset for e in events] == [o for _, o in acked]
            assert got.failures() == []
            await got.stop()
            # Every reader is back (those of the failed shard's other streams, which had
            # nothing to deliver, may still be in their reconnect backoff, up to 2 s).
            deadline = time.monotonic() + TIMEOUT
            while True:
                health = (await asyncio.to_thread(x.get, "/realtime/health")).json()
                if health["broker_healthy"] is True:
                    break
                assert time.monotonic() < deadline, x.log()[-3000:]
                await asyncio.sleep(0.1)
            print(f"every reader back {time.monotonic() - killed_at:.2f} s after the kill")
            assert health["broker"] == "redis-cluster"
            assert "Traceback" not in x.log(), x.log()[-3000:]


async def test_a_cluster_client_reset_under_concurrent_commands_is_a_connection_error(
    cluster: RedisClusterSet,
) -> None:
    """redis-py's cluster client resets itself (closes every node's connections, busy
    ones included) on CLUSTERDOWN, a slot no master serves, or every few MOVED; the
    commands other tasks have in flight on it then fail on a None stream writer with an
    AttributeError. The broker must report that as BrokerUnavailable (the caller
    retries), never let the AttributeError escape (HTTP 500, a crashed publisher, a
    traceback in the log). The reset is called directly here, as redis-py does on a
    shard failover, while commands of every shard are in flight."""
    broker = RedisBroker(cluster.url(), history_size=100, history_ttl=60, reader=False)
    streams = list(SubscriptionType)
    unexpected: list[BaseException] = []
    unavailable = 0
    try:
        await broker.publish(score(1, home=0), SubscriptionType.MATCHES, None)
        for _ in range(40):  # bounded: each round races the reset with 4 commands a stream
            calls = [asyncio.create_task(broker.position(st)) for st in streams for _ in range(4)]
            await asyncio.sleep(0)  # the commands are on their connections
            await broker.redis.aclose()  # what redis-py does on CLUSTERDOWN
            for res in await asyncio.gather(*calls, return_exceptions=True):
                if isinstance(res, BrokerUnavailable):
                    unavailable += 1
                elif isinstance(res, BaseException):
                    unexpected.append(res)
        assert unexpected == [], [repr(e) for e in unexpected[:3]]
        print(f"{unavailable} commands reported BrokerUnavailable")
    finally:
        await broker.stop()
