"""Tier timeliness over real sockets: a delayed tier gets goals late, a paying tier at
once; recovery and snapshots give a delayed tier only what it may see at that moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..redis_server import RedisServer
from ..support import RunningServer, WSClient, barrier, running_server, token
from .test_websocket import publish, score

DELAY = 1.0
TIERS: dict[str, Any] = {
    "free": {"delay_seconds": {"matches": DELAY}, "min_interval_seconds": {"odds": 5}},
    "slow": {"delay_seconds": {"matches": 600}},
    "premium": {},
}


@pytest.fixture(scope="module", params=["memory", "redis"])
def srv(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """On the in-process broker, and on a real redis-server of its own (delays count
    from Redis's publish time; history and snapshots come from Redis)."""
    if request.param == "memory":
        with running_server(tiers=TIERS) as s:
            yield s
        return
    with RedisServer() as redis, running_server(tiers=TIERS, broker_url=redis.url) as s:
        yield s


async def sub(c: WSClient, stream: str, match_id: int, **extra: Any) -> dict[str, Any]:
    reply = await c.request(
        "subscribe", {"subscription_type": stream, "filters": {"match_ids": [match_id]}, **extra}
    )
    assert reply["event_type"] == "message_ack", reply
    result: dict[str, Any] = reply["data"]["result"]
    return result


def odds(match_id: int, home: float) -> dict[str, Any]:
    return {
        "event_type": "odds_updated",
        "data": {
            "match_id": match_id,
            "bookmaker": "b1",
            "home_odds": home,
            "draw_odds": 3.2,
            "away_odds": 3.9,
        },
    }


async def test_the_free_tier_gets_the_goal_after_its_delay_the_paying_one_at_once(
    srv: RunningServer,
) -> None:
    async with (
        await WSClient.connect(srv.url(user_id="f1"), tier="free") as free,
        await WSClient.connect(srv.url(user_id="p1"), tier="premium") as paid,
    ):
        welcome = await free.wait_for(lambda m: m["event_type"] == "connection_status")
        assert welcome["data"]["status"] == "connected"
        await free.subscribe("matches", match_ids=[101])
        await paid.subscribe("matches", match_ids=[101])
        t0 = time.time()
        await publish(srv, score(101))
        (got,) = await paid.events(1)
        assert got["data"]["match_id"] == 101
        assert [m for m in free.inbox if "offset" in m] == []
        (late,) = await free.events(1, timeout=10)
        assert late["offset"] == got["offset"]
        # not before its due time (the timer fires at publish time + delay)
        assert time.time() - t0 >= DELAY - 0.05


async def test_the_auth_reply_names_the_tier_s_delays(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.url(user_id="f2"), tier=None) as c:
        reply = await c.request("auth", {"token": token("f2", "free")})
        assert reply["event_type"] == "message_ack", reply
        perms = reply["data"]["result"]["permissions"]
        assert perms["tier"] == "free"
        assert perms["delay_seconds"]["match_score_changed"] == DELAY
        assert perms["min_interval_seconds"] == {"odds_updated": 5}


async def test_recovery_and_snapshot_give_a_delayed_tier_nothing_it_may_not_see_yet(
    srv: RunningServer,
) -> None:
    async with await WSClient.connect(srv.url(user_id="p2"), tier="premium") as paid:
        first = await sub(paid, "matches", 202, snapshot=True)
        start = first["streams"]["matches"]
        for home in (1, 2, 3):
            await publish(srv, score(202, home_score=home))
        got = await paid.events(3)
        assert [e["data"]["home_score"] for e in got] == [1, 2, 3]
    since = {"matches": start}
    async with await WSClient.connect(srv.url(user_id="s1"), tier="slow") as slow:
        res = await slow.request(
            "subscribe",
            {"subscription_type": "matches", "filters": {"match_ids": [202]}, "since": since},
        )
        assert res["event_type"] == "message_ack", res
        result = res["data"]["result"]
        # the tier's view of the stream stops before the goals its delay holds back
        assert result["streams"]["matches"]["offset"] < got[0]["offset"]
        snap = await slow.request(
            "subscribe",
            {"subscription_type": "matches", "filters": {"match_ids": [202]}, "snapshot": True},
        )
        assert snap["event_type"] == "message_ack", snap
        await barrier(slow)
        assert [m for m in slow.inbox if "offset" in m] == []
    # the paying tier recovers all three from the same position
    async with await WSClient.connect(srv.url(user_id="p3"), tier="premium") as again:
        res = await again.request(
            "subscribe",
            {"subscription_type": "matches", "filters": {"match_ids": [202]}, "since": since},
        )
        assert res["data"]["result"]["recovered"] is True
        assert [e["data"]["home_score"] for e in await again.events(3)] == [1, 2, 3]


async def test_a_delayed_snapshot_shows_the_score_as_it_was(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.url(user_id="f3"), tier="free") as watcher:
        await watcher.subscribe("matches", match_ids=[303])
        await publish(srv, score(303, home_score=1))
        (seen,) = await watcher.events(1, timeout=10)  # now visible to the free tier
        assert seen["data"]["home_score"] == 1
        await publish(srv, score(303, home_score=2))
        async with await WSClient.connect(srv.url(user_id="f4"), tier="free") as fresh:
            res = await sub(fresh, "matches", 303, snapshot=True)
            assert res["streams"]["matches"]["offset"] == seen["offset"]
            (snap,) = await fresh.events(1)
            # 1-0, not the 2-0 the delay still holds back
            assert snap["offset"] == seen["offset"] and snap["data"]["home_score"] == 1
            (live,) = await fresh.events(1, timeout=10)
            assert live["data"]["home_score"] == 2


async def test_free_odds_are_thinned_to_the_latest_per_match_and_bookmaker(
    srv: RunningServer,
) -> None:
    async with (
        await WSClient.connect(srv.url(user_id="f5"), tier="free") as free,
        await WSClient.connect(srv.url(user_id="p5"), tier="premium") as paid,
    ):
        await free.subscribe("odds", match_ids=[404])
        await paid.subscribe("odds", match_ids=[404])
        for home in (2.0, 2.1, 2.2, 2.3):
            await publish(srv, odds(404, home))
        assert [e["data"]["home_odds"] for e in await paid.events(4)] == [2.0, 2.1, 2.2, 2.3]
        # the first at once, then the latest of the window when it ends (5 s)
        got = await free.events(2, timeout=15)
        assert [e["data"]["home_odds"] for e in got] == [2.0, 2.3]
        await barrier(free)
        assert [m for m in free.inbox if "offset" in m] == []


async def test_stats_count_the_delayed_and_thinned_events(srv: RunningServer) -> None:
    async with await WSClient.connect(srv.url(user_id="p6"), tier="premium") as c:
        await c.subscribe("matches", match_ids=[505])
        await publish(srv, score(505))
        await c.events(1)
    # the slow tier holds it for ten minutes: its line has it
    stats = await asyncio.to_thread(httpx.get, srv.http_url + "/realtime/stats")
    assert stats.json()["tier_timeliness"]["delayed_events"] >= 1
