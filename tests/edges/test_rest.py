"""REST endpoints: health, stats, connection details, broadcast, admin auth, OpenAPI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from ..support import ADMIN, RunningServer, WSClient, admin_headers, running_server


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=5) as client:
        yield client


def test_health(server: RunningServer, http: httpx.Client) -> None:
    r = http.get("/realtime/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["broker"] == "memory"
    assert body["active_connections"] == 0
    assert body["uptime_seconds"] >= 0
    assert body["version"]


async def test_stats_follow_traffic(server: RunningServer) -> None:
    # Anonymous (free tier, no user): match_started still arrives, and no
    # user_subscription_changed adds to the counts.
    async with await WSClient.connect(server.ws_url, tier=None) as c:
        await c.recv()
        await c.subscribe("matches")
        await c.ws.send("oops")
        await c.wait_for(lambda m: m["event_type"] == "error")
        await asyncio.to_thread(
            server.publish,
            {
                "event_type": "match_started",
                "data": {"match_id": 1, "home_team": "a", "away_team": "b"},
            },
        )
        await c.events(1)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            s = (await http.get("/realtime/stats")).json()
    for key in (
        "active_connections",
        "total_messages",
        "error_rate",
        "uptime_seconds",
        "messages_per_second",
        "connects_per_second",
        "disconnects_per_second",
        "average_connection_duration_seconds",
        "messages_sent",
        "messages_received",
        "bytes_sent",
        "bytes_received",
        "average_message_size",
    ):
        assert key in s, key
    assert s["active_connections"] == 1
    assert s["messages_received"] == 2
    # connection_status, ack, error, event
    assert s["messages_sent"] == 4
    assert s["total_messages"] == 6
    assert s["errors"] == 1 and s["errors_by_code"] == {"invalid_json": 1}
    assert s["error_rate"] == pytest.approx(1 / 6, abs=1e-3)
    assert s["delivered_by_event_type"] == {"match_started": 1}
    assert s["bytes_received"] > 0 and s["bytes_sent"] > s["bytes_received"]


def test_admin_endpoints_require_the_token(server: RunningServer, http: httpx.Client) -> None:
    body = {"event_type": "system_status", "data": {"status": "healthy"}}
    assert http.post("/realtime/broadcast", json=body).status_code == 401
    r = http.post("/realtime/broadcast", json=body, headers=admin_headers("wrong"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert http.get("/realtime/connections/x").status_code == 401
    r = http.post("/realtime/broadcast", json=body, headers=admin_headers())
    assert r.status_code == 200
    assert r.json() == {
        "accepted": True,
        "event_type": "system_status",
        "stream": "system_alerts",
        "offset": 1,
        "epoch": r.json()["epoch"],
    }


def test_broadcast_validation_names_the_field(server: RunningServer, http: httpx.Client) -> None:
    h = admin_headers()
    r = http.post(
        "/realtime/broadcast",
        json={"event_type": "match_score_changed", "data": {"match_id": 1, "home_score": -1}},
        headers=h,
    )
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert ("body", "data", "home_score") in locs and ("body", "data", "away_score") in locs
    r = http.post("/realtime/broadcast", json={"event_type": "goal", "data": {}}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "event_type"]
    r = http.post(
        "/realtime/broadcast",
        json={"event_type": "connection_status", "data": {"status": "connected"}},
        headers=h,
    )
    assert r.status_code == 422 and "server" in r.text
    r = http.post(
        "/realtime/broadcast", content=b"{", headers={**h, "content-type": "application/json"}
    )
    assert r.status_code == 422
    r = http.post(
        "/realtime/broadcast",
        json={
            "event_type": "system_status",
            "data": {"status": "healthy"},
            "target": {"user_id": "a", "room": "b"},
        },
        headers=h,
    )
    assert r.status_code == 422 and "exactly one" in r.text
    assert server.realtime.stats.events_published == 0


def test_idempotency_key_publishes_once(server: RunningServer, http: httpx.Client) -> None:
    body = {"event_type": "system_status", "data": {"status": "healthy"}}
    h = {**admin_headers(), "Idempotency-Key": "k1"}
    first = http.post("/realtime/broadcast", json=body, headers=h).json()
    again = http.post("/realtime/broadcast", json=body, headers=h).json()
    assert (first["offset"], again["offset"]) == (1, 1)
    assert again["duplicate"] is True and "duplicate" not in first
    other = http.post(
        "/realtime/broadcast", json={**body, "idempotency_key": "k2"}, headers=admin_headers()
    ).json()
    assert other["offset"] == 2


async def test_connection_details(server: RunningServer) -> None:
    async with await WSClient.connect(server.ws_url + "?user_id=u9&session_id=s9") as c:
        cid = (await c.recv())["data"]["connection_id"]
        await c.subscribe("odds", match_ids=[5])
        async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers()) as http:
            d = (await http.get(f"/realtime/connections/{cid}")).json()
    assert d["connection_id"] == cid
    assert (d["user_id"], d["session_id"]) == ("u9", "s9")
    assert d["connected_at"].endswith("Z")
    assert d["subscriptions"][0]["filters"] == {"match_ids": [5]}
    assert d["messages_received"] == 1
    assert d["messages_sent"] == 3  # connection_status, ack, user_subscription_changed


def test_generated_admin_token_when_unset(capfd: pytest.CaptureFixture[str]) -> None:
    with running_server(admin_token=None) as srv:
        token = srv.realtime.admin_token
        assert token and token != ADMIN
        body = {"event_type": "system_status", "data": {"status": "healthy"}}
        url = f"{srv.http_url}/realtime/broadcast"
        assert httpx.post(url, json=body, headers=admin_headers(ADMIN)).status_code == 401
        assert httpx.post(url, json=body, headers=admin_headers(token)).status_code == 200
    assert token in capfd.readouterr().err


def test_openapi_documents_the_endpoints(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for p in (
        "/realtime/health",
        "/realtime/stats",
        "/realtime/connections/{connection_id}",
        "/realtime/broadcast",
    ):
        assert p in paths
    assert http.get("/docs").status_code == 200
