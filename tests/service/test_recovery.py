"""Recovery (``since``) and snapshots on the memory broker, with real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..support import RunningServer, WSClient, barrier, running_server


def score(match_id: int, home: int, league: str = "英超") -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {"match_id": match_id, "league": league, "home_score": home, "away_score": 0},
    }


async def apublish(srv: RunningServer, event: dict[str, Any]) -> Any:
    return await asyncio.to_thread(srv.publish, event)


async def test_reconnect_with_since_receives_every_missed_event_once(
    any_server: RunningServer,
) -> None:
    srv = any_server
    async with await WSClient.connect(srv.ws_url) as c:
        await c.recv()
        res = await c.subscribe("matches", match_ids=[1])
        pos = res["streams"]["matches"]
        for i in range(3):
            await apublish(srv, score(1, i))
        seen = await c.events(3)
    last = seen[-1]["offset"]
    # away: events for match 1 and 2 are published
    for i in range(3, 8):
        await apublish(srv, score(1, i))
        await apublish(srv, score(2, i))
    async with await WSClient.connect(srv.ws_url) as c:
        await c.recv()
        reply = await c.request(
            "subscribe",
            {
                "subscription_type": "matches",
                "filters": {"match_ids": [1]},
                "since": {"matches": {"epoch": pos["epoch"], "offset": last}},
            },
        )
        res = reply["data"]["result"]
        assert res["recovered"] is True
        assert res["streams"]["matches"]["offset"] == 3 + 10
        await apublish(srv, score(1, 99))
        got = await c.events(6)
        assert [e["data"]["home_score"] for e in got] == [3, 4, 5, 6, 7, 99]
        offsets = [e["offset"] for e in got]
        assert offsets == sorted(offsets) and len(set(offsets)) == 6
        assert all(e["data"]["match_id"] == 1 for e in got)
        await barrier(c)
        await c.expect_silence(0)


async def test_replay_racing_live_publishing_has_no_gap_or_duplicate(server: RunningServer) -> None:
    srv = server
    async with await WSClient.connect(srv.ws_url) as c:
        await c.recv()
        res = await c.subscribe("matches")
    epoch = res["streams"]["matches"]["epoch"]
    for i in range(200):
        await apublish(srv, score(i % 5, i))

    stop = asyncio.Event()

    async def publisher() -> int:
        n = 0
        while not stop.is_set() and n < 300:
            await apublish(srv, score(7, 1000 + n))
            n += 1
        return n

    async with await WSClient.connect(srv.ws_url) as c:
        await c.recv()
        task = asyncio.create_task(publisher())
        sub = {
            "type": "subscribe",
            "id": "r",
            "data": {
                "subscription_type": "matches",
                "since": {"matches": {"epoch": epoch, "offset": 0}},
            },
        }
        await c.ws.send(json.dumps(sub))
        ack = await c.wait_for(lambda m: m["event_type"] == "message_ack")
        assert ack["data"]["result"]["recovered"] is True
        first = await c.events(250)
        stop.set()
        published = await task
        total = 200 + published
        rest = await c.events(total - 250)
        offsets = [e["offset"] for e in first + rest]
        assert offsets == list(range(1, total + 1))


async def test_recovery_refused_when_epoch_differs_or_history_too_short() -> None:
    with running_server(history_size=5) as srv:
        async with await WSClient.connect(srv.ws_url) as c:
            await c.recv()
            res = await c.subscribe("matches")
            epoch = res["streams"]["matches"]["epoch"]
            for i in range(10):
                await apublish(srv, score(1, i))
            await c.events(10)
            r = await c.request(
                "subscribe",
                {
                    "subscription_type": "matches",
                    "since": {"matches": {"epoch": "other", "offset": 1}},
                },
            )
            res = r["data"]["result"]
            assert res["recovered"] is False and "epoch" in res["reason"]
            r = await c.request(
                "subscribe",
                {
                    "subscription_type": "matches",
                    "since": {"matches": {"epoch": epoch, "offset": 2}},
                },
            )
            res = r["data"]["result"]
            assert res["recovered"] is False and "history" in res["reason"]
            # never a partial replay
            await barrier(c)
            await c.expect_silence(0)
            r = await c.request(
                "subscribe",
                {
                    "subscription_type": "matches",
                    "since": {"matches": {"epoch": epoch, "offset": 6}},
                },
            )
            assert r["data"]["result"]["recovered"] is True
            assert [e["offset"] for e in await c.events(4)] == [7, 8, 9, 10]
            r = await c.request(
                "subscribe",
                {"subscription_type": "odds", "since": {"matches": {"epoch": epoch, "offset": 6}}},
            )
            assert r["event_type"] == "error" and r["data"]["code"] == "invalid_since"
            stats = srv.realtime.stats
            assert (stats.recoveries, stats.recoveries_failed, stats.replayed_events) == (1, 2, 4)


async def test_snapshot_sends_latest_state_per_match_before_live(any_server: RunningServer) -> None:
    srv = any_server
    await apublish(srv, score(1, 1))
    await apublish(srv, score(1, 2))
    await apublish(srv, score(2, 5, league="西甲"))
    await apublish(
        srv,
        {
            "event_type": "match_started",
            "data": {"match_id": 1, "home_team": "a", "away_team": "b", "league": "英超"},
        },
    )
    async with await WSClient.connect(srv.ws_url) as c:
        await c.recv()
        r = await c.request(
            "subscribe",
            {"subscription_type": "matches", "filters": {"leagues": ["英超"]}, "snapshot": True},
        )
        assert r["event_type"] == "message_ack"
        snap = await c.events(2)
        assert [(e["event_type"], e["data"].get("home_score")) for e in snap] == [
            ("match_score_changed", 2),
            ("match_started", None),
        ]
        await apublish(srv, score(1, 3))
        (live,) = await c.events(1)
        assert live["data"]["home_score"] == 3 and live["offset"] == 5
