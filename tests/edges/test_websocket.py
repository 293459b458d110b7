"""The WebSocket protocol end to end, with real clients against a real server."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import httpx
import pytest
import websockets

from ..support import RunningServer, WSClient, admin_headers, barrier, post_broadcast

PRED = {
    "prediction_id": 1,
    "match_id": 1,
    "league": "英超",
    "prediction": "home_win",
    "confidence": 0.8,
    "home_win_prob": 0.6,
    "draw_prob": 0.25,
    "away_win_prob": 0.15,
}


def pred(**kw: Any) -> dict[str, Any]:
    return {"event_type": "prediction_created", "data": {**PRED, **kw}}


def score(match_id: int, league: str | None = "英超", **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"match_id": match_id, "home_score": 1, "away_score": 0, **kw}
    if league is not None:
        data["league"] = league
    return {"event_type": "match_score_changed", "data": data}


async def publish(srv: RunningServer, event: dict[str, Any]) -> dict[str, Any]:
    r = await asyncio.to_thread(post_broadcast, srv, event)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_connection_status_on_accept(any_server: RunningServer) -> None:
    async with await WSClient.connect(any_server.ws_url + "?user_id=u1&session_id=s1") as c:
        msg = await c.recv()
    assert msg["event_type"] == "connection_status"
    d = msg["data"]
    assert d["status"] == "connected"
    assert d["connection_id"].startswith("c_")
    assert (d["user_id"], d["session_id"]) == ("u1", "s1")
    assert d["subscriptions"] == []
    assert d["heartbeat_interval"] == 30.0
    assert d["server_time"].endswith("Z")
    assert msg["timestamp"].endswith("Z")


async def test_dedicated_endpoints_with_url_encoded_chinese_leagues(
    any_server: RunningServer,
) -> None:
    base = any_server.ws_url
    q = urllib.parse.urlencode({"match_ids": "1,2,3", "leagues": "英超,西甲"})
    async with (
        await WSClient.connect(f"{base}/matches?{q}") as m,
        await WSClient.connect(f"{base}/predictions?match_ids=1,2,3&min_confidence=0.7") as p,
    ):
        st_m = await m.recv()
        st_p = await p.recv()
        (sub_m,) = st_m["data"]["subscriptions"]
        assert sub_m["subscription_type"] == "matches"
        assert sub_m["filters"] == {"match_ids": [1, 2, 3], "leagues": ["英超", "西甲"]}
        (sub_p,) = st_p["data"]["subscriptions"]
        assert sub_p["filters"] == {"match_ids": [1, 2, 3], "min_confidence": 0.7}

        await publish(any_server, score(2, "西甲"))
        await publish(any_server, score(2, "意甲"))  # league not in filter
        await publish(any_server, score(9, "英超"))  # match not in filter
        await publish(any_server, pred(match_id=3, confidence=0.69))
        await publish(any_server, pred(match_id=3, confidence=0.7))
        (ev,) = await m.events(1)
        assert ev["data"]["league"] == "西甲" and ev["data"]["match_id"] == 2
        (ev,) = await p.events(1)
        assert ev["data"]["confidence"] == 0.7
        await barrier(m)
        await barrier(p)
        await m.expect_silence(0)
        await p.expect_silence(0)
        assert not [x for x in m.inbox + p.inbox if "offset" in x]


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/matches?match_ids=1,x", "match_ids"),
        ("/predictions?min_confidence=high", "min_confidence"),
        ("/predictions?min_confidence=3", "min_confidence"),
        ("/matches?event_types=odds_updated", "odds_updated"),
        ("?user_id=" + "u" * 200, "user_id"),
    ],
)
async def test_bad_query_values_are_refused_with_a_reason(
    server: RunningServer, path: str, needle: str
) -> None:
    async with await WSClient.connect(server.ws_url + path) as c:
        err = await c.recv()
        assert err["event_type"] == "error"
        assert needle in err["data"]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await c.recv()
        assert c.ws.close_code == 4500
        assert needle in (c.ws.close_reason or "")


async def test_subscribe_unsubscribe_acks_and_filters(any_server: RunningServer) -> None:
    async with await WSClient.connect(any_server.ws_url) as c:
        await c.recv()
        r = await c.request(
            "subscribe", {"subscription_type": "matches", "filters": {"leagues": ["英超"]}}
        )
        assert r["event_type"] == "message_ack"
        res = r["data"]["result"]
        assert r["data"]["type"] == "subscribe"
        assert res["subscription_type"] == "matches"
        assert res["event_types"] == sorted(
            ["match_started", "match_score_changed", "match_status_changed", "match_ended"]
        )
        assert res["filters"] == {"leagues": ["英超"]}
        assert res["streams"]["matches"]["offset"] == 0
        await publish(any_server, score(1))
        (ev,) = await c.events(1)
        assert ev["stream"] == "matches" and ev["offset"] == 1
        r = await c.request("unsubscribe", {"subscription_id": res["subscription_id"]})
        assert r["event_type"] == "message_ack"
        assert [s["subscription_id"] for s in r["data"]["result"]["removed"]] == [
            res["subscription_id"]
        ]
        await publish(any_server, score(1))
        await barrier(c)
        await c.expect_silence(0)
        r = await c.request("unsubscribe", {"subscription_id": res["subscription_id"]})
        assert r["event_type"] == "error" and r["data"]["code"] == "not_found"


async def test_offsets_count_every_event_of_the_stream(server: RunningServer) -> None:
    async with await WSClient.connect(server.ws_url) as c:
        await c.recv()
        await c.subscribe("matches", match_ids=[2])
        for m in (1, 2, 1, 2):
            await publish(server, score(m))
        evs = await c.events(2)
        assert [e["offset"] for e in evs] == [2, 4]


async def test_event_matching_several_subscriptions_is_delivered_once(
    any_server: RunningServer,
) -> None:
    async with await WSClient.connect(any_server.ws_url) as c:
        await c.recv()
        await c.subscribe("predictions")
        await c.subscribe("predictions", match_ids=[1])
        await c.subscribe(None, event_types=["prediction_created", "match_started"])
        await publish(any_server, pred())
        await publish(any_server, score(1))
        (ev,) = await c.events(1)
        assert ev["event_type"] == "prediction_created"
        await barrier(c)
        await c.expect_silence(0)


async def test_unsubscribe_by_type_and_event_types_narrowing(server: RunningServer) -> None:
    async with await WSClient.connect(server.ws_url) as c:
        await c.recv()
        res = await c.subscribe("matches", event_types=["match_ended"])
        assert res["event_types"] == ["match_ended"]
        r = await c.request(
            "subscribe",
            {"subscription_type": "matches", "filters": {"event_types": ["odds_updated"]}},
        )
        assert r["event_type"] == "error" and r["data"]["code"] == "invalid_filter"
        assert "odds_updated" in r["data"]["message"]
        await publish(server, score(1))
        await publish(
            server,
            {
                "event_type": "match_ended",
                "data": {"match_id": 1, "home_score": 1, "away_score": 0},
            },
        )
        (ev,) = await c.events(1)
        assert ev["event_type"] == "match_ended"
        r = await c.request("unsubscribe", {"subscription_type": "matches"})
        assert r["event_type"] == "message_ack"
        assert r["data"]["result"]["subscriptions"] == []
        r = await c.request("unsubscribe", {"subscription_type": "odds"})
        assert r["data"]["code"] == "not_found"


async def test_user_subscription_changed_reaches_all_connections_of_the_user(
    server: RunningServer,
) -> None:
    url = server.ws_url + "?user_id=alice"
    async with (
        await WSClient.connect(url) as a1,
        await WSClient.connect(url) as a2,
        await WSClient.connect(server.ws_url + "?user_id=bob") as b,
    ):
        for c in (a1, a2, b):
            await c.recv()
        res = await a1.subscribe("odds")
        for c in (a1, a2):
            ev = await c.wait_for(lambda m: m["event_type"] == "user_subscription_changed")
            assert ev["data"]["action"] == "subscribed"
            assert ev["data"]["subscription_id"] == res["subscription_id"]
            assert ev["data"]["user_id"] == "alice"
        await barrier(b)
        assert not [m for m in b.inbox if m["event_type"] == "user_subscription_changed"]
        await a1.request("unsubscribe", {"subscription_id": res["subscription_id"]})
        ev = await a2.wait_for(lambda m: m["event_type"] == "user_subscription_changed")
        assert ev["data"]["action"] == "unsubscribed"


async def test_heartbeat_and_get_stats(any_server: RunningServer) -> None:
    async with await WSClient.connect(any_server.ws_url + "?user_id=u") as c:
        first = await c.recv()
        r = await c.request("heartbeat")
        assert r["event_type"] == "message_ack" and r["data"]["result"]["server_time"].endswith("Z")
        await c.subscribe("predictions")
        r = await c.request("get_stats")
        res = r["data"]["result"]
        assert res["connection"]["connection_id"] == first["data"]["connection_id"]
        assert res["connection"]["messages_received"] == 3
        assert len(res["connection"]["subscriptions"]) == 1
        assert res["server"]["active_connections"] >= 1
        assert {"total_messages", "error_rate", "uptime_seconds", "messages_per_second"} <= set(
            res["server"]
        )


async def test_targeted_broadcast_to_user_connection_and_room(server: RunningServer) -> None:
    async with (
        await WSClient.connect(server.ws_url + "?user_id=alice") as a,
        await WSClient.connect(server.ws_url + "?user_id=bob") as b,
    ):
        a_id = (await a.recv())["data"]["connection_id"]
        await b.recv()
        r = await b.request("join", {"room": "match:1"})
        assert r["data"]["result"]["rooms"] == ["match:1"]
        alert = {
            "event_type": "system_alert",
            "data": {"alert_type": "info", "message": "hi", "severity": "low", "component": "t"},
        }

        async def send(target: dict[str, str]) -> int:
            r = await asyncio.to_thread(post_broadcast, server, {**alert, "target": target})
            assert r.status_code == 200, r.text
            return int(r.json()["recipients"])

        assert await send({"user_id": "alice"}) == 1
        assert await send({"connection_id": a_id}) == 1
        assert await send({"room": "match:1"}) == 1
        assert await send({"user_id": "nobody"}) == 0
        got_a = [await a.wait_for(lambda m: m["event_type"] == "system_alert") for _ in range(2)]
        got_b = await b.wait_for(lambda m: m["event_type"] == "system_alert")
        assert all(
            "offset" not in m for m in [*got_a, got_b]
        )  # targeted sends are not stream events
        await barrier(a)
        await barrier(b)
        assert not [m for m in a.inbox + b.inbox if m["event_type"] == "system_alert"]
        r = await b.request("leave", {"room": "match:1"})
        assert r["data"]["result"]["rooms"] == []
        assert await send({"room": "match:1"}) == 0
        r = await b.request("leave", {"room": "match:1"})
        assert r["data"]["code"] == "not_found"


async def test_bad_input_gets_clear_answers_and_others_unaffected(
    any_server: RunningServer,
) -> None:
    async with (
        await WSClient.connect(any_server.ws_url) as bystander,
        await WSClient.connect(any_server.ws_url) as bad,
    ):
        bystander_id = (await bystander.recv())["data"]["connection_id"]
        await bad.recv()
        await bystander.subscribe("predictions")
        cases = [
            ("{not json", "invalid_json"),
            ('{"type": 1}', "invalid_message"),
            ('{"type": "subscribe", "data": "x"}', "invalid_message"),
            ('{"type": "fly"}', "unknown_type"),
            (
                '{"type": "subscribe", "data": {"subscription_type": "goals"}}',
                "unknown_subscription_type",
            ),
            (
                '{"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"match_ids": []}}}',
                "invalid_filter",
            ),
            (
                '{"type": "subscribe", "data": {"subscription_type": "odds", "filters": {"leagues": [1]}}}',
                "invalid_filter",
            ),
            ('{"type": "unsubscribe", "data": {"subscription_id": "sub_nope"}}', "not_found"),
        ]
        for text, code in cases:
            await bad.ws.send(text)
            err = await bad.wait_for(lambda m: m["event_type"] == "error")
            assert err["data"]["code"] == code, (text, err)
            assert err["data"]["message"]
        # still usable after all that
        r = await bad.request("heartbeat")
        assert r["event_type"] == "message_ack"
        await publish(any_server, pred())
        (ev,) = await bystander.events(1)
        assert ev["event_type"] == "prediction_created"
        async with httpx.AsyncClient(base_url=any_server.http_url, headers=admin_headers()) as http:
            r = await http.get("/realtime/connections/c_unknown")
            assert r.status_code == 404 and "c_unknown" in r.json()["detail"]
            r = await http.get(f"/realtime/connections/{bystander_id}")
            assert r.status_code == 200
        # a binary frame closes with 1003, the bystander keeps working
        await bad.ws.send(b"\x00\x01")
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await bad.recv()
        assert bad.ws.close_code == 1003
        await publish(any_server, pred(prediction_id=2))
        (ev,) = await bystander.events(1)
        assert ev["data"]["prediction_id"] == 2


async def test_oversized_message_closes_1009(server: RunningServer) -> None:
    async with await WSClient.connect(server.ws_url, max_size=None) as c:
        await c.recv()
        await c.ws.send('{"type":"heartbeat","pad":"' + "x" * 70_000 + '"}')
        with pytest.raises(websockets.ConnectionClosed):
            await c.recv()
        assert c.ws.close_code == 1009


async def test_subscription_limit(server: RunningServer) -> None:
    limit = server.settings.max_subscriptions_per_connection
    async with await WSClient.connect(server.ws_url) as c:
        await c.recv()
        for _ in range(limit):
            await c.subscribe("odds")
        r = await c.request("subscribe", {"subscription_type": "odds"})
        assert r["event_type"] == "error" and r["data"]["code"] == "limit_exceeded"
