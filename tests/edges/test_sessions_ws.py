"""Durable sessions and acks over real sockets: the handshake query, the first ``auth``,
refusals with their close codes, and resume with replay then live events."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import websockets

from ..support import RunningServer, WSClient, barrier, running_server, token
from .test_metrics import scrape_async
from .test_websocket import publish, score


async def welcome(c: WSClient) -> dict[str, Any]:
    msg = await c.wait_for(lambda m: m["event_type"] == "connection_status")
    assert msg["data"]["status"] == "connected", msg
    data: dict[str, Any] = msg["data"]
    return data


async def send_ack(c: WSClient, epoch: str, offset: int, stream: str = "matches") -> None:
    await c.ws.send(
        orjson.dumps(
            {"type": "ack", "data": {"positions": {stream: {"epoch": epoch, "offset": offset}}}}
        ).decode()
    )


async def closed_with(c: WSClient) -> tuple[int | None, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    try:
        while True:
            got.append(await c.recv())
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), got


async def test_resume_over_the_socket_replays_then_live(any_server: RunningServer) -> None:
    srv = any_server
    tok = token("alice")
    c = await WSClient.connect(srv.url(session_id="new", token=tok))
    info = (await welcome(c))["session"]
    assert info["resumed"] is False and info["expires_in"] == 900
    sid = info["id"]
    res = await c.subscribe("matches", match_ids=[1])
    epoch = res["streams"]["matches"]["epoch"]
    for _ in range(3):
        await publish(srv, score(1))
    evs = await c.events(3)
    await send_ack(c, epoch, evs[0]["offset"])
    await barrier(c)  # the ack got no reply: the barrier's reply is the next message
    await c.close()
    await publish(srv, score(1))

    c2 = await WSClient.connect(srv.url(session_id=sid, resume="1", token=tok))
    data = await welcome(c2)
    assert data["session"] == {"id": sid, "resumed": True, "expires_in": 900}
    assert data["session_id"] == sid
    changed = await c2.wait_for(lambda m: m["event_type"] == "user_subscription_changed")
    assert changed["data"]["restored"] is True and changed["data"]["recovered"] is True
    assert changed["data"]["streams"]["matches"]["replay_after"] == 1
    await publish(srv, score(1))
    got = await c2.events(4)
    assert [e["offset"] for e in got] == [2, 3, 4, 5]
    await c2.close()


async def test_refusals_close_with_the_documented_codes(server: RunningServer) -> None:
    c = await WSClient.connect(server.url(session_id="new", token=token("alice")))
    sid = (await welcome(c))["session"]["id"]
    await c.close()

    other = await WSClient.connect(server.url(session_id=sid, resume="1", token=token("bob")))
    code, msgs = await closed_with(other)
    assert code == 4503
    assert msgs[-1]["data"]["code"] == "session_refused"
    assert "another identity" in msgs[-1]["data"]["message"]

    anonymous = await WSClient.connect(server.url(session_id=sid, resume="1"), tier=None)
    code, msgs = await closed_with(anonymous)
    assert code == 4501 and msgs[-1]["data"]["code"] == "session_refused"

    bad = await WSClient.connect(server.url(session_id="short", resume="1"), tier=None)
    code, msgs = await closed_with(bad)
    assert code == 4500 and "22-64 characters" in msgs[-1]["data"]["message"]

    dedicated = await WSClient.connect(server.url("/realtime/ws/matches", session_id="new"))
    code, _ = await closed_with(dedicated)
    assert code == 4500


async def test_a_session_id_without_resume_stays_a_label(server: RunningServer) -> None:
    async with await WSClient.connect(server.url(session_id="legacy-label")) as c:
        data = await welcome(c)
        assert data["session_id"] == "legacy-label" and "session" not in data


async def test_in_band_auth_opens_the_session() -> None:
    with running_server(require_auth=True) as srv:
        tok = token("carol")
        c = await WSClient.connect(srv.ws_url, tier=None)
        reply = await c.request("auth", {"token": tok, "session_id": "new"})
        assert reply["event_type"] == "message_ack"
        sid = (await welcome(c))["session"]["id"]
        await c.subscribe("matches")
        await c.close()
        srv.publish(score(1))
        c2 = await WSClient.connect(srv.ws_url, tier=None)
        await c2.request("auth", {"token": tok, "session_id": sid, "resume": True})
        assert (await welcome(c2))["session"]["resumed"] is True
        (ev,) = await c2.events(1)
        assert ev["offset"] == 1
        refused = await c2.request("auth", {"token": tok, "session_id": "new"})
        assert refused["data"]["code"] == "invalid_message"
        await c2.close()


async def test_an_invalid_ack_gets_an_error_a_valid_one_nothing(server: RunningServer) -> None:
    async with await WSClient.connect(server.ws_url) as c:
        await welcome(c)
        res = await c.subscribe("matches")
        epoch = res["streams"]["matches"]["epoch"]
        reply = await c.request("ack", {"positions": {"matches": {"epoch": epoch, "offset": 5}}})
        assert reply["event_type"] == "error" and reply["data"]["code"] == "invalid_ack"
        assert "ahead" in reply["data"]["message"]
        await publish(server, score(1))
        await c.events(1)
        await send_ack(c, epoch, 1)
        await barrier(c)
        assert not [m for m in c.inbox if m["event_type"] == "error"]


@pytest.mark.parametrize("query", [{"resume": "1"}, {"resume": "maybe", "session_id": "new"}])
async def test_bad_session_parameters(server: RunningServer, query: dict[str, str]) -> None:
    c = await WSClient.connect(server.url(**query), tier=None)
    code, msgs = await closed_with(c)
    assert code == 4500, msgs


async def test_session_figures_in_metrics_and_stats(server: RunningServer) -> None:
    tok = token("dora")
    c = await WSClient.connect(server.url(session_id="new", token=tok))
    sid = (await welcome(c))["session"]["id"]
    res = await c.subscribe("matches")
    epoch = res["streams"]["matches"]["epoch"]
    await publish(server, score(1))
    await publish(server, score(1))
    await c.events(2)
    await send_ack(c, epoch, 1)
    await barrier(c)
    await c.close()
    again = await WSClient.connect(server.url(session_id=sid, resume="1", token=tok))
    await welcome(again)
    await again.events(1)  # offset 2, acknowledged by nobody yet
    refused = await WSClient.connect(server.url(session_id=sid, resume="1", token=token("eve")))
    await closed_with(refused)

    stats = (await asyncio.to_thread(httpx.get, server.http_url + "/realtime/stats")).json()
    m = await scrape_async(server)
    assert stats["sessions_active"] == m.value("realtime_sessions_active") == 1
    assert stats["sessions_created"] == m.value("realtime_sessions_created_total") == 1
    assert stats["sessions_resumed"] == m.value("realtime_sessions_resumed_total") == 1
    assert stats["sessions_expired"] == m.value("realtime_sessions_expired_total") == 0
    assert (
        stats["sessions_refused_by_reason"]
        == m.labels("realtime_sessions_refused_total", "reason")
        == {"owner": 1}
    )
    assert stats["session_unacked_offsets"] == m.value("realtime_session_unacked_offsets") == 1
    buckets = m.buckets("realtime_ack_latency_seconds", event_type="match_score_changed")
    assert (
        buckets[-1][1] == stats["ack_latency_ms_by_event_type"]["match_score_changed"]["count"] == 1
    )
    await again.close()
