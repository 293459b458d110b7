"""Several real `serve` processes sharing one real redis-server act as one service."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest

from football_realtime.brokers import PublishResult
from football_realtime.publisher import Publisher

from ..cluster_support import (
    Follower,
    Instance,
    assert_exactly,
    instances,
    odds,
    prediction,
    score,
)
from ..redis_server import RedisServer
from ..support import TIMEOUT, UNIT

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster(redis: RedisServer) -> Iterator[list[Instance]]:
    with instances(["a", "b", "c"], redis.url) as started:
        yield started


async def publish_many(
    url: str,
    events: list[dict[str, Any]],
    interval: float = 0.0,
    out: list[PublishResult] | None = None,
) -> list[PublishResult]:
    """Publish through the standalone Publisher; ``out`` fills as it goes."""
    out = [] if out is None else out
    async with Publisher(url) as p:
        for ev in events:
            out.append(await p.publish(ev))
            if interval:
                await asyncio.sleep(interval)
    return out


async def published_past(out: list[PublishResult], offset: int) -> None:
    """Wait until the publisher has published beyond ``offset`` (events the client misses)."""
    async with asyncio.timeout(TIMEOUT):
        while not out or out[-1].offset <= offset:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_cross_instance_delivery_with_filters(
    redis: RedisServer, cluster: list[Instance]
) -> None:
    a, b, c = cluster
    f1 = Follower("matches", {"match_ids": [101]})
    f2 = Follower("matches", {"leagues": ["西甲"]})
    f3 = Follower("predictions", {"min_confidence": 0.7})
    for f, inst in ((f1, a), (f2, b), (f3, c)):
        await f.connect(inst.ws_url)
    base = f1.positions["matches"]["offset"]
    # Published through three different doors: REST on b, REST on c, the Publisher.
    r = b.broadcast(score(101, 1))
    assert r.status_code == 200, r.text
    assert c.broadcast(score(102, 1, league="西甲")).status_code == 200
    res = await publish_many(
        redis.url,
        [
            score(101, 2, league="西甲"),
            score(103, 1),
            prediction(9, 101, 0.9),
            prediction(10, 101, 0.5),
        ],
    )
    await f1.wait_offset("matches", base + 3)
    await f2.wait_offset("matches", base + 3)
    await f3.wait_offset("predictions", res[2].offset)
    await asyncio.sleep(0.2 * UNIT)  # anything wrongly routed would arrive by now
    assert [e["data"]["home_score"] for e in f1.events] == [1, 2]
    assert f1.offsets("matches") == [base + 1, base + 3]
    assert [e["data"]["match_id"] for e in f2.events] == [102, 101]
    assert [e["data"]["prediction_id"] for e in f3.events] == [9]
    for f in (f1, f2, f3):
        await f.close()


async def test_one_order_across_instances(redis: RedisServer, cluster: list[Instance]) -> None:
    """Concurrent publishers on every instance: every client on every instance sees
    the same gapless sequence of offsets."""
    followers = [Follower("odds") for _ in cluster]
    for f, inst in zip(followers, cluster, strict=True):
        await f.connect(inst.ws_url)
    start = followers[0].positions["odds"]["offset"]
    per = 25

    def post_all(inst: Instance, k: int) -> list[int]:
        out = []
        for i in range(per):
            r = inst.broadcast(odds(500 + k, f"b{k}", 1.5 + i / 100))
            assert r.status_code == 200, r.text
            out.append(r.json()["offset"])
        return out

    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, post_all, inst, k) for k, inst in enumerate(cluster))
        )
    expected = list(range(start + 1, start + 3 * per + 1))
    assert sorted(o for r in results for o in r) == expected
    for f in followers:
        await f.wait_offset("odds", expected[-1])
        assert_exactly(f.offsets("odds"), expected)
    payloads = [[(e["offset"], e["data"]) for e in f.events] for f in followers]
    assert payloads[0] == payloads[1] == payloads[2]
    for f in followers:
        await f.close()


async def test_idempotent_broadcast_across_instances(cluster: list[Instance]) -> None:
    a, b, _ = cluster
    body = score(777, 1)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = await asyncio.gather(
            loop.run_in_executor(pool, lambda: a.broadcast(body, **{"Idempotency-Key": "k-777"})),
            loop.run_in_executor(pool, lambda: b.broadcast(body, **{"Idempotency-Key": "k-777"})),
            loop.run_in_executor(pool, lambda: a.broadcast({**body, "idempotency_key": "k-777"})),
        )
    answers = [r.json() for r in rs]
    assert all(r.status_code == 200 for r in rs), answers
    assert len({(x["stream"], x["offset"], x["epoch"]) for x in answers}) == 1
    assert sorted(bool(x.get("duplicate")) for x in answers) == [False, True, True]


async def test_client_dropped_mid_stream_recovers_on_another_instance(
    redis: RedisServer, cluster: list[Instance]
) -> None:
    a, b, _ = cluster
    f = Follower("matches", {"match_ids": [201]})
    await f.connect(a.ws_url)
    start = f.positions["matches"]["offset"]
    events = [score(201 if i % 3 else 202, i) for i in range(90)]
    progress: list[PublishResult] = []
    pub = asyncio.create_task(publish_many(redis.url, events, 0.002, progress))
    await f.wait_offset("matches", start + 10)
    await f.drop()  # vanishes mid-stream; publishing goes on
    away_at = f.positions["matches"]["offset"]
    await published_past(progress, away_at + 15)
    ack = await f.connect(b.ws_url)
    assert ack["recovered"] is True, ack
    results = await pub
    expected = [
        r.offset for r, ev in zip(results, events, strict=True) if ev["data"]["match_id"] == 201
    ]
    await f.wait_offset("matches", expected[-1])
    assert_exactly(f.offsets("matches"), expected)
    await f.close()


async def test_replay_racing_live_publishing(redis: RedisServer, cluster: list[Instance]) -> None:
    """A client far behind recovers while events keep coming: no gap, no duplicate."""
    _, b, c = cluster
    f = Follower("analytics")
    await f.connect(b.ws_url)
    start = f.positions["analytics"]["offset"]
    await f.close()
    # 400 events happen while it is away, then it returns while 200 more are published.
    before = [
        {"event_type": "analytics_updated", "data": {"period": f"p{i}", "accuracy": 0.5}}
        for i in range(400)
    ]
    during = [
        {"event_type": "analytics_updated", "data": {"period": f"q{i}", "accuracy": 0.6}}
        for i in range(200)
    ]
    await publish_many(redis.url, before)
    pub = asyncio.create_task(publish_many(redis.url, during))
    await asyncio.sleep(0)
    ack = await f.connect(c.ws_url)
    assert ack["recovered"] is True, ack
    results = await pub
    last = results[-1].offset
    await f.wait_offset("analytics", last)
    assert_exactly(f.offsets("analytics"), list(range(start + 1, last + 1)))
    await f.close()


async def test_instance_sigkill_clients_recover_and_registry_expires(
    redis: RedisServer, cluster: list[Instance]
) -> None:
    a, b, _ = cluster
    with instances(["doomed"], redis.url) as (doomed,):
        fs = [Follower("matches", {"match_ids": [301]}), Follower("matches")]
        for f in fs:
            await f.connect(doomed.ws_url)
        cid = fs[0].connection_ids[-1]

        # Any instance answers for a connection held by another (registry in Redis).
        async def registered() -> dict[str, Any]:
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while True:
                r = await asyncio.to_thread(
                    a.get,
                    f"/realtime/connections/{cid}",
                    headers={"Authorization": "Bearer test-admin-token"},
                )
                # Registered on connect; details refreshed each heartbeat (0.5 s here).
                if r.status_code == 200 and r.json()["subscriptions"]:
                    body: dict[str, Any] = r.json()
                    return body
                assert asyncio.get_running_loop().time() < deadline, r.text
                await asyncio.sleep(0.05)

        info = await registered()
        assert info["instance_id"] == "doomed" and info["local"] is False
        assert info["subscriptions"][0]["subscription_type"] == "matches"
        stats = a.get("/realtime/stats").json()["cluster"]
        names = [i["instance_id"] for i in stats["instances"]]
        assert "doomed" in names and {"a", "b", "c"} <= set(names)
        assert stats["totals"]["active_connections"] == sum(
            i["active_connections"] for i in stats["instances"]
        )
        start = fs[1].positions["matches"]["offset"]
        events = [score(301 if i % 2 else 302, i) for i in range(80)]
        progress: list[PublishResult] = []
        pub = asyncio.create_task(publish_many(redis.url, events, 0.002, progress))
        await fs[1].wait_offset("matches", start + 15)
        doomed.kill()
        for f in fs:
            await f.wait_closed()
        await published_past(progress, fs[1].positions["matches"]["offset"] + 15)
        acks = [await fs[0].connect(a.ws_url), await fs[1].connect(b.ws_url)]
        assert all(ack["recovered"] is True for ack in acks), acks
        results = await pub
        all_offsets = [r.offset for r in results]
        only_301 = [
            r.offset for r, ev in zip(results, events, strict=True) if ev["data"]["match_id"] == 301
        ]
        await fs[1].wait_offset("matches", all_offsets[-1])
        await fs[0].wait_offset("matches", only_301[-1])
        assert_exactly(fs[1].offsets("matches"), list(range(start + 1, all_offsets[-1] + 1)))
        assert_exactly(fs[0].offsets("matches"), only_301)
        for f in fs:
            await f.close()
    # The crashed instance's registrations expire (TTL: three 0.5 s heartbeats).
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        names = [i["instance_id"] for i in a.get("/realtime/stats").json()["cluster"]["instances"]]
        if "doomed" not in names:
            break
        assert asyncio.get_running_loop().time() < deadline, names
        await asyncio.sleep(0.1)
    r = a.get(f"/realtime/connections/{cid}", headers={"Authorization": "Bearer test-admin-token"})
    assert r.status_code == 404


async def test_graceful_shutdown_loses_nothing(redis: RedisServer, cluster: list[Instance]) -> None:
    a, _, _ = cluster
    with instances(["leaving"], redis.url) as (leaving,):
        f = Follower("predictions")
        await f.connect(leaving.ws_url)
        start = f.positions["predictions"]["offset"]
        events = [prediction(i, 400, 0.8, "updated") for i in range(80)]
        progress: list[PublishResult] = []
        pub = asyncio.create_task(publish_many(redis.url, events, 0.002, progress))
        await f.wait_offset("predictions", start + 10)
        rc = await asyncio.to_thread(leaving.terminate)
        # uvicorn shuts down gracefully, then re-raises SIGTERM: -15 is a clean exit.
        assert rc in (0, -15), leaving.log()[-2000:]
        assert "Traceback" not in leaving.log(), leaving.log()[-2000:]
        assert await f.wait_closed() == 1012
        assert f.statuses[-1]["status"] == "closing", f.statuses
        # Events the client misses while away (unless a slow shutdown let it take all:
        # then the publisher's last one is the mark, and recovery must still hold).
        last = start + len(events)
        await published_past(progress, min(f.positions["predictions"]["offset"] + 15, last - 1))
        ack = await f.connect(a.ws_url)
        assert ack["recovered"] is True, ack
        results = await pub
        await f.wait_offset("predictions", results[-1].offset)
        assert_exactly(f.offsets("predictions"), list(range(start + 1, results[-1].offset + 1)))
        await f.close()


async def test_snapshot_on_subscribe_from_another_instance(
    redis: RedisServer, cluster: list[Instance]
) -> None:
    """A dashboard opening on c sees current scores published through a, at once."""
    a, _, c = cluster
    for i, m in enumerate([701, 702, 701, 703, 701]):
        assert a.broadcast(score(m, i)).status_code == 200
    f = Follower("matches", {"match_ids": [701, 702]}, snapshot=True)
    ack = await f.connect(c.ws_url)
    top = ack["streams"]["matches"]["offset"]
    async with asyncio.timeout(TIMEOUT):
        while len(f.events) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1 * UNIT)
    assert [(e["data"]["match_id"], e["data"]["home_score"]) for e in f.events] == [
        (702, 1),
        (701, 4),
    ]
    assert f.events[-1]["offset"] == top
    r = a.broadcast(score(702, 9))
    await f.wait_offset("matches", r.json()["offset"])
    assert f.events[-1]["data"]["home_score"] == 9
    await f.close()
