"""Authentication, token refresh and expiry, tier permissions and field filtering, admin
REST roles: real server, real clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import orjson
import pytest
import websockets

from ..client_support import until
from ..support import (
    ADMIN,
    TIMEOUT,
    UNIT,
    RunningServer,
    WSClient,
    barrier,
    post_broadcast,
    running_server,
    token,
)

PREDICTION = {
    "prediction_id": 1,
    "match_id": 456,
    "league": "英超",
    "prediction": "home_win",
    "confidence": 0.75,
    "home_win_prob": 0.65,
    "draw_prob": 0.25,
    "away_win_prob": 0.10,
    "expected_value": 0.12,
    "strategy": "ml_ensemble",
}
ODDS = {
    "match_id": 456,
    "bookmaker": "b",
    "home_odds": 1.9,
    "draw_odds": 3.2,
    "away_odds": 4.1,
}


async def closed_with(ws: Any, timeout: float = TIMEOUT) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes: (code, reason, messages received before)."""
    got: list[dict[str, Any]] = []
    try:
        while True:
            got.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None, f"no close frame from the server; got {got}"
        return exc.rcvd.code, exc.rcvd.reason, got


@pytest.fixture
def auth_server() -> Any:
    with running_server(require_auth=True, auth_timeout=0.5 * UNIT) as srv:
        yield srv


# -- where the token comes from -----------------------------------------------


async def test_token_in_query_header_and_first_message(auth_server: RunningServer) -> None:
    srv = auth_server
    async with await WSClient.connect(srv.url(token=token("q-user"))) as c:
        hello = await c.recv()
        assert hello["data"]["status"] == "connected"
        assert (hello["data"]["user_id"], hello["data"]["tier"]) == ("q-user", "premium")
        assert hello["data"]["authenticated"] is True

    headers = {"Authorization": f"Bearer {token('h-user', 'free')}"}
    async with await WSClient.connect(srv.ws_url, additional_headers=headers) as c:
        hello = await c.recv()
        assert (hello["data"]["user_id"], hello["data"]["tier"]) == ("h-user", "free")

    # First-message auth: nothing at all arrives before the reply to `auth`.
    async with await WSClient.connect(srv.ws_url, tier=None) as c:
        with pytest.raises(TimeoutError):
            await c.recv(0.2 * UNIT)
        reply = await c.request("auth", {"token": token("m-user")})
        assert reply["event_type"] == "message_ack", reply
        assert reply["data"]["result"]["user_id"] == "m-user"
        assert reply["data"]["result"]["tier"] == "premium"
        hello = await c.recv()
        assert (hello["data"]["status"], hello["data"]["user_id"]) == ("connected", "m-user")
        await c.subscribe("odds")


@pytest.mark.parametrize(
    ("make", "code", "reason"),
    [
        (lambda: token(ttl=-120), 4502, "token expired"),
        (lambda: token(secret="another-secret-" + "x" * 30), 4501, "invalid token signature"),
        (
            lambda: jwt.encode({"user_id": "u", "exp": time.time() + 60}, None, algorithm="none"),
            4501,
            "token algorithm 'none' is not accepted (accepted: HS256)",
        ),
        (lambda: token(tier="gold"), 4501, "unknown tier 'gold'"),
        (lambda: "garbage", 4501, "malformed token"),
    ],
)
async def test_bad_tokens_are_closed_with_reason(
    auth_server: RunningServer, make: Any, code: int, reason: str
) -> None:
    tok = make()
    async with websockets.connect(auth_server.url(token=tok), open_timeout=TIMEOUT) as ws:
        got_code, got_reason, msgs = await closed_with(ws)
    assert (got_code, got_reason) == (code, reason)
    assert [m["data"]["code"] for m in msgs] == ["unauthorized"]
    assert tok not in got_reason and tok not in str(msgs)


async def test_user_in_query_must_match_token(server: RunningServer) -> None:
    url = server.url(token=token("alice"), user_id="mallory")
    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        code, reason, _ = await closed_with(ws)
    assert (code, reason) == (4501, "user_id query parameter does not match the token")
    async with await WSClient.connect(server.url(token=token("alice"), user_id="alice")) as c:
        assert (await c.recv())["data"]["user_id"] == "alice"


async def test_require_auth_refuses_other_messages_and_times_out(
    auth_server: RunningServer,
) -> None:
    async with websockets.connect(auth_server.ws_url, open_timeout=TIMEOUT) as ws:
        await ws.send(
            orjson.dumps({"type": "subscribe", "data": {"subscription_type": "odds"}}).decode()
        )
        code, reason, msgs = await closed_with(ws)
    assert (code, reason, msgs) == (4501, "authenticate first: got 'subscribe' before auth", [])

    async with websockets.connect(auth_server.ws_url, open_timeout=TIMEOUT) as ws:
        started = time.monotonic()
        code, reason, msgs = await closed_with(ws)
    assert (code, reason, msgs) == (4505, "no auth message within 0.5 s", [])
    assert time.monotonic() - started >= 0.4 * UNIT

    async with websockets.connect(auth_server.ws_url, open_timeout=TIMEOUT) as ws:
        await ws.send(
            orjson.dumps({"type": "auth", "id": 1, "data": {"token": token(ttl=-99)}}).decode()
        )
        code, reason, msgs = await closed_with(ws)
    assert (code, reason) == (4502, "token expired")
    assert [(m["event_type"], m["data"]["code"], m["data"]["id"]) for m in msgs] == [
        ("error", "unauthorized", 1)
    ]
    assert auth_server.call(lambda: len(auth_server.realtime.hub.connections)) == 0


# -- refresh and expiry ---------------------------------------------------------


async def test_refresh_keeps_the_connection_and_expiry_closes_it() -> None:
    # The warning comes 0.2 s in, leaving 1.8 s to refresh even on a loaded machine.
    with running_server(jwt_leeway=0, token_expiry_warning=1.8 * UNIT) as srv:
        expires = time.time() + 2 * UNIT
        async with await WSClient.connect(srv.url(token=token("r", ttl=2 * UNIT))) as c:
            await c.subscribe("matches")
            warning = await c.wait_for(lambda m: m["data"].get("status") == "warning")
            assert warning["data"]["reason"] == "token_expiring"
            reply = await c.request("auth", {"token": token("r", ttl=60)})
            assert reply["event_type"] == "message_ack"
            await asyncio.sleep(expires - time.time() + 0.2 * UNIT)  # past the first expiry
            srv.publish({"event_type": "match_started", "data": _match()})
            assert (await c.events(1))[0]["event_type"] == "match_started"

        # No refresh: a warning, then 4502 and nothing after it.
        async with websockets.connect(srv.url(token=token("n", ttl=1)), open_timeout=TIMEOUT) as ws:
            code, reason, msgs = await closed_with(ws)
        assert (code, reason) == (4502, "token expired")
        assert [m["data"]["status"] for m in msgs] == ["connected", "warning"]

        # A refresh for another user is refused and the connection keeps its identity.
        async with await WSClient.connect(srv.url(token=token("a"))) as c:
            reply = await c.request("auth", {"token": token("b")})
            assert reply["data"]["code"] == "unauthorized"
            assert reply["data"]["message"] == "the token names another user than this connection"
            stats = await c.request("get_stats")
            assert stats["data"]["result"]["connection"]["user_id"] == "a"


async def test_tier_downgrade_by_refresh_narrows_subscriptions(server: RunningServer) -> None:
    async with await WSClient.connect(server.url(token=token("d"))) as c:
        odds = await c.subscribe("odds")
        preds = await c.subscribe("predictions")
        reply = await c.request("auth", {"token": token("d", "free")})
        result = reply["data"]["result"]
        assert result["tier"] == "free"
        assert [s["subscription_id"] for s in result["removed"]] == [odds["subscription_id"]]
        assert [s["event_types"] for s in result["subscriptions"]] == [["prediction_created"]]
        assert preds["event_types"] != result["subscriptions"][0]["event_types"]
        server.publish({"event_type": "odds_updated", "data": ODDS})
        server.publish({"event_type": "prediction_updated", "data": PREDICTION})
        server.publish({"event_type": "prediction_created", "data": PREDICTION})
        ev = (await c.events(1))[0]
        assert ev["event_type"] == "prediction_created"
        assert "expected_value" not in ev["data"]
        await barrier(c)
        await c.expect_silence()


# -- tiers ------------------------------------------------------------------------


def _match(match_id: int = 456) -> dict[str, Any]:
    return {"match_id": match_id, "home_team": "曼联", "away_team": "切尔西", "league": "英超"}


async def test_free_tier_narrowed_refused_and_never_leaks(server: RunningServer) -> None:
    async with (
        await WSClient.connect(server.ws_url, tier=None) as anon,
        await WSClient.connect(server.url(token=token("f", "free"))) as free,
        await WSClient.connect(server.premium_url) as premium,
    ):
        assert (await anon.recv())["data"]["tier"] == "free"
        # A whole stream is narrowed; the ack shows the effective event types.
        sub = await free.subscribe("predictions")
        assert sub["event_types"] == ["prediction_created"]
        sub = await anon.subscribe("matches")
        assert sub["event_types"] == ["match_started"]
        # Explicit forbidden types and streams with nothing allowed are refused.
        reply = await free.request(
            "subscribe",
            {"filters": {"event_types": ["prediction_created", "prediction_updated"]}},
        )
        assert reply["data"]["code"] == "forbidden"
        assert reply["data"]["message"] == "tier 'free' may not receive prediction_updated"
        reply = await free.request("subscribe", {"subscription_type": "odds"})
        assert reply["data"]["code"] == "forbidden"
        assert "odds_updated" in reply["data"]["message"]
        await premium.subscribe("odds")
        await premium.subscribe("predictions")

        # A forbidden event broadcast to the free user directly (targeted send) and to
        # the room it joined: the free connections get nothing.
        await free.request("join", {"room": "vip"})
        for target in ({"user_id": "f"}, {"room": "vip"}):
            r = await asyncio.to_thread(
                post_broadcast,
                server,
                {"event_type": "odds_updated", "data": ODDS, "target": target},
            )
            assert r.status_code == 200, r.text
            assert r.json()["recipients"] == 0
        r = await asyncio.to_thread(
            post_broadcast, server, {"event_type": "odds_updated", "data": ODDS}
        )
        assert r.status_code == 200
        server.publish({"event_type": "prediction_created", "data": PREDICTION})
        got = [e["event_type"] for e in await premium.events(2)]
        assert got == ["odds_updated", "prediction_created"]
        ev = (await free.events(1))[0]
        assert ev["event_type"] == "prediction_created"
        assert set(ev["data"]) == set(PREDICTION) - {"expected_value", "strategy"}
        for c in (free, anon):
            await barrier(c)
            await c.expect_silence()
        assert not [m for m in free.inbox if m.get("event_type") == "odds_updated"]


async def test_preset_endpoint_forbidden_for_free_tier(server: RunningServer) -> None:
    async with websockets.connect(server.url("/realtime/ws/odds"), open_timeout=TIMEOUT) as ws:
        code, reason, msgs = await closed_with(ws)
    assert code == 4503
    assert reason.startswith("tier 'free' may not receive odds_")
    assert msgs[0]["data"]["code"] == "forbidden"


async def test_each_view_is_serialised_once(server: RunningServer) -> None:
    rt = server.realtime
    calls: list[tuple[int, str]] = []
    original = rt.views.render

    def counting(ev: Any, view: Any) -> Any:
        calls.append((ev.offset, view))
        return original(ev, view)

    server.call(lambda: setattr(rt.hub, "render_view", counting))
    clients = [await WSClient.connect(server.url(token=token(f"u{i}", "free"))) for i in range(5)]
    clients += [await WSClient.connect(server.url(token=token(f"p{i}"))) for i in range(3)]
    try:
        for c in clients:
            await c.subscribe("predictions")
        server.publish({"event_type": "prediction_created", "data": PREDICTION})
        received = [(await c.events(1))[0] for c in clients]
        assert all("strategy" not in e["data"] for e in received[:5])
        assert all(e["data"]["strategy"] == "ml_ensemble" for e in received[5:])
        # Five free connections, one rendering; premium needs none.
        assert calls == [(1, "free")]
    finally:
        for c in clients:
            await c.close()


# -- admin REST ------------------------------------------------------------------------


def test_admin_rest_accepts_admin_token_or_admin_jwt(server: RunningServer) -> None:
    body = {"event_type": "match_started", "data": _match()}

    def post(auth: str | None) -> httpx.Response:
        headers = {"Authorization": auth} if auth is not None else {}
        return post_broadcast(server, body, headers=headers)

    assert post(None).status_code == 401
    assert post("Bearer wrong").status_code == 401
    assert post(f"Bearer {ADMIN}").status_code == 200
    assert post(f"Bearer {token('svc', roles=['service'])}").status_code == 200
    assert post(f"Bearer {token('adm', roles=['admin'])}").status_code == 200
    user = post(f"Bearer {token('user')}")
    assert (user.status_code, user.json()["detail"]) == (
        403,
        "the token needs role admin or service",
    )
    expired = post(f"Bearer {token('adm', roles=['admin'], ttl=-120)}")
    assert (expired.status_code, expired.json()["detail"]) == (401, "invalid token: token expired")
    r = httpx.get(
        f"{server.http_url}/realtime/connections/nope",
        headers={"Authorization": f"Bearer {token('user')}"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 403


async def test_token_deadlines_leave_the_shared_timer_wheel_with_their_connections() -> None:
    # Every token's expiry warning and expiry sit on one timer wheel; a closed
    # connection, or one whose token was refreshed, must not leave an entry behind.
    with running_server() as srv:

        def scheduled() -> int:
            wheel = srv.realtime.sessions._expiry
            return len(wheel) if wheel is not None else 0

        clients = [await WSClient.connect(srv.url(token=token(f"w{i}", ttl=600))) for i in range(3)]
        for c in clients:
            await c.subscribe("matches")
        assert srv.call(scheduled) == 3
        reply = await clients[0].request("auth", {"token": token("w0", ttl=900)})
        assert reply["event_type"] == "message_ack"
        assert srv.call(scheduled) == 3  # moved, not added
        for c in clients:
            await c.close()
        await until(lambda: srv.call(lambda: len(srv.realtime.hub.connections)) == 0)
        assert srv.call(scheduled) == 0
