"""A durable session resumed after its stream's history no longer reaches back to its
acknowledged offset: the critical event types (REALTIME_SESSION_CRITICAL_TYPES) kept
for REALTIME_SESSION_TTL are replayed, then what the history still has, then live
events: each once, in offset order, with ``recovered: false`` and a reason that says so
(docs/protocol.md, Sessions). Real server, real sockets; memory, a real redis-server
and a real Redis Cluster (on their own ports)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..redis_cluster import RedisClusterSet
from ..redis_server import RedisServer
from ..support import RunningServer, WSClient, barrier, running_server, token
from ..test_schema import assert_valid
from .test_sessions_ws import send_ack, welcome
from .test_websocket import publish, score

HISTORY = 3
MATCH_TYPES = "match_score_changed, match_status_changed, match_ended"


def started(match_id: int) -> dict[str, Any]:
    data = {"match_id": match_id, "league": "英超", "home_team": "曼联", "away_team": "切尔西"}
    return {"event_type": "match_started", "data": data}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet() as cluster:
        yield cluster


@pytest.fixture(params=["memory", "redis", "cluster"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return cluster.url()
    srv: RedisServer = request.getfixturevalue("redis_server")
    srv.flushall()
    return srv.url


async def session_acked_at_1(srv: RunningServer, tok: str) -> tuple[str, str]:
    """A session subscribed to match 1's events that received and acked offset 1, then
    disconnected: (session id, epoch)."""
    c = await WSClient.connect(srv.url(session_id="new", token=tok))
    sid = (await welcome(c))["session"]["id"]
    res = await c.subscribe("matches", match_ids=[1])
    epoch = res["streams"]["matches"]["epoch"]
    await publish(srv, score(1, home_score=1))
    assert [e["offset"] for e in await c.events(1)] == [1]
    await send_ack(c, epoch, 1)
    await barrier(c)  # the ack got no reply: the barrier's reply is the next message
    await c.close()
    return sid, epoch


async def beyond_the_history(srv: RunningServer) -> None:
    """Offsets 2..8, more than the history (3) holds: it keeps 6, 7, 8."""
    await publish(srv, started(1))  # 2: not critical
    await publish(srv, score(1, home_score=2))  # 3: the goal (critical)
    await publish(srv, started(1))  # 4: not critical
    await publish(srv, score(2, home_score=1))  # 5: critical, another match (filtered)
    await publish(srv, started(1))  # 6: in the history
    await publish(srv, score(1, home_score=3))  # 7: in the history, critical
    await publish(srv, started(1))  # 8: in the history


async def resume(srv: RunningServer, sid: str, tok: str) -> tuple[WSClient, dict[str, Any]]:
    c = await WSClient.connect(srv.url(session_id=sid, resume="1", token=tok))
    assert (await welcome(c))["session"]["resumed"] is True
    changed = await c.wait_for(lambda m: m["event_type"] == "user_subscription_changed")
    assert_valid("ServerMessage", changed)  # history_from is in the JSON Schema
    data: dict[str, Any] = changed["data"]
    assert data["restored"] is True
    return c, data


async def test_the_goal_beyond_the_history_is_replayed_once_in_order(broker_url: str) -> None:
    with running_server(broker_url=broker_url, history_size=HISTORY) as srv:
        tok = token("alice")
        sid, epoch = await session_acked_at_1(srv, tok)
        await beyond_the_history(srv)

        c, data = await resume(srv, sid, tok)
        assert data["recovered"] is False
        assert data["reason"] == (
            "matches: history no longer reaches back to offset 2; its critical events "
            f"({MATCH_TYPES}) after offset 1 were replayed, then every event from offset 6"
        )
        entry = data["streams"]["matches"]
        assert entry == {
            "epoch": epoch,
            "offset": 8,
            "recovered": False,
            "replay_after": 1,
            "history_from": 6,
        }
        await publish(srv, score(1, home_score=4))  # 9: live
        got = await c.events(5)
        assert [(e["offset"], e["event_type"]) for e in got] == [
            (3, "match_score_changed"),
            (6, "match_started"),
            (7, "match_score_changed"),
            (8, "match_started"),
            (9, "match_score_changed"),
        ]
        assert got[0]["data"]["home_score"] == 2
        await barrier(c)
        await c.expect_silence()  # nothing twice, nothing else
        await c.close()


async def test_unacked_critical_events_come_again_on_the_next_resume() -> None:
    with running_server(history_size=HISTORY) as srv:
        tok = token("bob")
        sid, _ = await session_acked_at_1(srv, tok)
        await beyond_the_history(srv)
        c, _ = await resume(srv, sid, tok)
        assert [e["offset"] for e in await c.events(4)] == [3, 6, 7, 8]
        await barrier(c)
        await c.close()  # without an ack: all of it is due again

        c, data = await resume(srv, sid, tok)
        assert data["recovered"] is False and data["streams"]["matches"]["replay_after"] == 1
        assert [e["offset"] for e in await c.events(4)] == [3, 6, 7, 8]
        await send_ack(c, data["streams"]["matches"]["epoch"], 8)
        await barrier(c)
        await c.close()

        c, data = await resume(srv, sid, tok)  # acked 8: a plain, complete replay
        assert data["recovered"] is True and "reason" not in data
        await barrier(c)
        await c.expect_silence()
        await c.close()


async def test_the_setting_chooses_the_types(broker_url: str) -> None:
    with running_server(
        broker_url=broker_url, history_size=HISTORY, session_critical_types=["match_started"]
    ) as srv:
        tok = token("carol")
        sid, _ = await session_acked_at_1(srv, tok)
        await beyond_the_history(srv)
        c, data = await resume(srv, sid, tok)
        assert data["reason"] == (
            "matches: history no longer reaches back to offset 2; its critical events "
            "(match_started) after offset 1 were replayed, then every event from offset 6"
        )
        got = await c.events(5)
        # The kick-offs now; the goal at 3 is not kept (only 7, still in the history).
        assert [e["offset"] for e in got] == [2, 4, 6, 7, 8]
        await barrier(c)
        await c.expect_silence()
        await c.close()


async def test_without_critical_types_nothing_beyond_the_history_is_replayed() -> None:
    with running_server(history_size=HISTORY, session_critical_types=[]) as srv:
        tok = token("dave")
        sid, epoch = await session_acked_at_1(srv, tok)
        await beyond_the_history(srv)
        c, data = await resume(srv, sid, tok)
        assert data["reason"] == "matches: history no longer reaches back to offset 2"
        assert data["streams"]["matches"] == {"epoch": epoch, "offset": 8, "recovered": False}
        await publish(srv, score(1, home_score=4))
        assert [e["offset"] for e in await c.events(1)] == [9]  # live only
        await c.close()
