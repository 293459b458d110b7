"""GET /metrics after real traffic: real WebSocket clients, real publishes, scraped
with prometheus-client's text parser. The counters move exactly as the traffic
says, and /realtime/stats reads the same numbers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import httpx
import orjson
import pytest
import websockets
from prometheus_client import CollectorRegistry

from football_realtime.app import Realtime, create_app
from football_realtime.edges.metrics import METRICS, bounded, close_code_label, mount_metrics

from ..scrape import Scrape, histogram_quantile, scrape
from ..support import TIMEOUT, UNIT, RunningServer, make_settings, running_server, token


def score(match_id: int, minute: int, **extra: Any) -> dict[str, Any]:
    data = {"match_id": match_id, "home_score": 1, "away_score": 0, "minute": minute, **extra}
    return {"event_type": "match_score_changed", "data": data}


def prediction(match_id: int) -> dict[str, Any]:
    return {
        "event_type": "prediction_created",
        "data": {
            "prediction_id": match_id * 10,
            "match_id": match_id,
            "home_team": "曼联",
            "away_team": "切尔西",
            "prediction": "home_win",
            "confidence": 0.8,
            "home_win_prob": 0.6,
            "draw_prob": 0.25,
            "away_win_prob": 0.15,
        },
    }


class Recorder:
    """A real client that records every frame it receives and every byte it sends."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[bytes] = []
        self.sent: list[str] = []
        self._n = 0
        self._task = asyncio.create_task(self._read())
        self._arrived = asyncio.Event()

    @classmethod
    async def connect(cls, url: str, **kw: Any) -> Recorder:
        return cls(await websockets.connect(url, open_timeout=TIMEOUT, **kw))

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for msg in self.ws:
                self.frames.append(msg.encode() if isinstance(msg, str) else msg)
                self._arrived.set()

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(f) for f in self.frames]

    async def send(self, text: str) -> None:
        self.sent.append(text)
        await self.ws.send(text)

    async def request(self, type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        self._n += 1
        rid = f"r{self._n}"
        msg: dict[str, Any] = {"type": type_, "id": rid}
        if data is not None:
            msg["data"] = data
        await self.send(orjson.dumps(msg).decode())
        return await self.wait(lambda m: m["data"].get("id") == rid and "offset" not in m)

    async def wait(self, pred: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for m in self.messages():
                    if pred(m):
                        return m
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_events(self, n: int) -> None:
        await self.wait(lambda _m: sum("offset" in m for m in self.messages()) >= n)

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)
        await self._task


async def wait_until(check: Any, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the state lives on the server thread
            await asyncio.sleep(0.01 * UNIT)


async def scrape_async(srv: RunningServer) -> Scrape:
    return await asyncio.to_thread(scrape, srv.http_url)


async def test_counters_follow_real_traffic(any_server: RunningServer) -> None:
    srv = any_server
    a = await Recorder.connect(srv.ws_url + f"?user_id=alice&token={token('alice')}")
    b = await Recorder.connect(srv.ws_url + f"?user_id=bob&token={token('bob')}")
    c = await Recorder.connect(srv.ws_url + f"?user_id=carol&token={token('carol')}")
    await a.request("subscribe", {"subscription_type": "matches"})
    await b.request("subscribe", {"subscription_type": "matches", "filters": {"match_ids": [1]}})
    await c.request("subscribe", {"subscription_type": "predictions"})
    clients = (a, b, c)
    before = await scrape_async(srv)
    frames_before = [len(x.frames) for x in clients]
    sent_before = [len(x.sent) for x in clients]

    assert before.value("realtime_connections_active") == 3
    assert before.value("realtime_users_active") == 3
    assert before.value("realtime_subscriptions_active") == 3

    # Traffic: 4 score events (match 1 twice, match 2 twice), 2 predictions, one bad
    # message, a heartbeat from everyone.
    for ev in (score(1, 10), score(2, 11), score(1, 12), score(2, 13)):
        await asyncio.to_thread(srv.publish, ev)
    for ev in (prediction(1), prediction(2)):
        await asyncio.to_thread(srv.publish, ev)
    await a.send("{not json")
    await a.wait(lambda m: m["event_type"] == "error" and m["data"]["code"] == "invalid_json")
    for x in clients:
        await x.request("heartbeat")
    await a.wait_events(4)
    await b.wait_events(2)
    await c.wait_events(2)

    after = await scrape_async(srv)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("realtime_messages_delivered_total", event_type="match_score_changed") == 6
    assert delta("realtime_messages_delivered_total", event_type="prediction_created") == 2
    assert delta("realtime_events_published_total", event_type="match_score_changed") == 4
    assert delta("realtime_events_published_total", event_type="prediction_created") == 2
    assert delta("realtime_events_consumed_total") == 6
    assert delta("realtime_delivery_latency_seconds_count", event_type="match_score_changed") == 4
    assert delta("realtime_delivery_latency_seconds_count", event_type="prediction_created") == 2
    assert delta("realtime_message_size_bytes_count", direction="out") == 6
    assert delta("realtime_broker_publish_latency_seconds_count") == 6
    assert delta("realtime_broker_consume_latency_seconds_count") == 6
    assert delta("realtime_errors_total", code="invalid_json") == 1
    assert delta("realtime_messages_received_total", type="invalid") == 1
    assert delta("realtime_messages_received_total", type="heartbeat") == 3

    # Every frame the clients got, and every byte, is in messages_sent/sent_bytes.
    got = [f for x, n in zip(clients, frames_before, strict=True) for f in x.frames[n:]]
    assert delta("realtime_messages_sent_total") == len(got)
    assert delta("realtime_sent_bytes_total") == sum(len(f) for f in got)
    sent = [t for x, n in zip(clients, sent_before, strict=True) for t in x.sent[n:]]
    assert delta("realtime_messages_received_total") == 0  # labelled only
    assert after.total("realtime_messages_received_total") - before.total(
        "realtime_messages_received_total"
    ) == len(sent)
    assert delta("realtime_received_bytes_total") == sum(len(t) for t in sent)
    assert delta("realtime_message_size_bytes_count", direction="in") == len(sent)
    assert delta("realtime_message_size_bytes_sum", direction="in") == sum(len(t) for t in sent)

    # Closes: a normal one, and one with a code outside the table (bounded label).
    await a.close(1000)
    await b.close(3999)
    await wait_until(lambda: srv.call(lambda: len(srv.realtime.hub.connections)) == 1)
    closed = await scrape_async(srv)
    assert closed.value("realtime_connections_active") == 1
    assert (
        closed.value("realtime_connections_closed_total", code="1000")
        == before.value("realtime_connections_closed_total", code="1000") + 1
    )
    assert closed.value("realtime_connections_closed_total", code="other") == 1
    assert "3999" not in closed.labels("realtime_connections_closed_total", "code")
    assert (
        closed.value("realtime_connection_duration_seconds_count")
        - before.value("realtime_connection_duration_seconds_count")
        == 2
    )
    assert closed.value("realtime_connections_opened_total") >= 3
    await c.close()


async def test_stats_and_metrics_agree(server: RunningServer) -> None:
    srv = server
    clients = [
        await Recorder.connect(srv.ws_url + f"?user_id=u{i}&token={token(f'u{i}')}")
        for i in range(4)
    ]
    for x in clients:
        await x.request("subscribe", {"subscription_type": "matches"})
    for i in range(30):
        await asyncio.to_thread(srv.publish, score(i % 3, i))
    await asyncio.to_thread(srv.publish, prediction(7))
    await clients[0].send('{"type": "nope"}')
    for x in clients:
        await x.wait_events(30)
    await clients[3].close()
    await wait_until(lambda: srv.call(lambda: len(srv.realtime.hub.connections)) == 3)

    stats = (await asyncio.to_thread(httpx.get, srv.http_url + "/realtime/stats")).json()
    m = await scrape_async(srv)
    assert stats["active_connections"] == m.value("realtime_connections_active") == 3
    assert stats["connections_opened"] == m.value("realtime_connections_opened_total")
    assert stats["connections_closed"] == m.total("realtime_connections_closed_total")
    assert stats["closed_by_code"] == {
        k: v for k, v in m.labels("realtime_connections_closed_total", "code").items()
    }
    assert stats["messages_sent"] == m.value("realtime_messages_sent_total")
    assert stats["messages_received"] == m.total("realtime_messages_received_total")
    assert stats["bytes_sent"] == m.value("realtime_sent_bytes_total")
    assert stats["bytes_received"] == m.value("realtime_received_bytes_total")
    assert stats["events_published"] == m.total("realtime_events_published_total")
    assert stats["delivered_by_event_type"] == m.labels(
        "realtime_messages_delivered_total", "event_type"
    )
    assert (
        stats["errors_by_code"] == m.labels("realtime_errors_total", "code") == {"unknown_type": 1}
    )
    assert stats["subscriptions"] == m.value("realtime_subscriptions_active") == 3
    assert stats["slow_consumer_disconnects"] == m.value("realtime_slow_consumer_disconnects_total")
    assert stats["replayed_events"] == m.value("realtime_recovery_replayed_events_total")
    assert stats["recoveries"] == m.value("realtime_recoveries_total")
    assert stats["recoveries_failed"] == m.value("realtime_recoveries_failed_total")
    assert stats["average_connection_duration_seconds"] == round(
        m.value("realtime_connection_duration_seconds_sum")
        / m.value("realtime_connection_duration_seconds_count"),
        3,
    )
    # Percentiles: PromQL's histogram_quantile over the scraped buckets gives the
    # figures /realtime/stats reports.
    by_type = stats["latency_ms_by_event_type"]
    # The prediction reached nobody: no write, so no publish-to-write latency.
    assert set(by_type) == {"match_score_changed"}
    for et, summary in by_type.items():
        buckets = m.buckets("realtime_delivery_latency_seconds", event_type=et)
        assert summary["count"] == buckets[-1][1]
        for p, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            expected = histogram_quantile(q, buckets)
            assert expected is not None
            assert summary[p] == pytest.approx(expected * 1000, abs=1e-3), (et, p)
    merged: dict[float, float] = {}
    for et in by_type:
        for le, n in m.buckets("realtime_delivery_latency_seconds", event_type=et):
            merged[le] = merged.get(le, 0) + n
    overall = histogram_quantile(0.99, sorted(merged.items()))
    assert overall is not None
    assert stats["latency_ms"]["p99"] == pytest.approx(overall * 1000, abs=1e-3)
    assert stats["latency_ms"]["count"] == 30
    for x in clients[:3]:
        await x.close()


async def test_queue_depth_and_slow_consumer_drop() -> None:
    """A client that stops reading: its queued bytes show at scrape time, then it is
    dropped as a slow consumer (close 4001), counted once."""
    limit = 4 * 1024 * 1024
    with running_server(outbound_buffer_bytes=limit) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.setblocking(False)
        slow = await websockets.connect(
            srv.ws_url + f"?user_id=slow&token={token('slow')}",
            sock=sock,
            max_queue=1,
            open_timeout=TIMEOUT,
            close_timeout=0.5 * UNIT,
            compression=None,  # the padding must fill the socket, not deflate to nothing
        )
        await slow.send(
            orjson.dumps(
                {"type": "subscribe", "id": 1, "data": {"subscription_type": "matches"}}
            ).decode()
        )
        assert orjson.loads(await slow.recv())["event_type"] == "connection_status"
        assert orjson.loads(await slow.recv())["event_type"] == "message_ack"
        healthy = await Recorder.connect(srv.ws_url + f"?user_id=ok&token={token('ok')}")
        await healthy.request("subscribe", {"subscription_type": "matches"})

        def queued() -> int:
            rt = srv.realtime
            return max((c.out.size for c in rt.hub.connections.values()), default=0)

        pad = "x" * 200_000
        published = 0
        while srv.call(queued) == 0:
            assert published < 400, "the slow client's buffer never filled"
            await asyncio.to_thread(srv.publish, score(1, published % 90, pad=pad))
            published += 1
        depth = srv.call(queued)
        m = await scrape_async(srv)
        assert m.value("realtime_outbound_queue_bytes_max") == depth
        assert m.value("realtime_outbound_queue_limit_bytes") == limit
        assert m.value("realtime_outbound_queue_bytes_gcount") == 2
        assert m.value("realtime_outbound_queue_bytes_gsum") == depth
        buckets = m.buckets("realtime_outbound_queue_bytes")
        assert dict(buckets)[0.0] == 1  # the healthy client has nothing queued
        assert dict(buckets)[float("inf")] == 2

        while srv.call(lambda: srv.realtime.stats.slow_consumer_disconnects) == 0:
            assert published < 1000, "the slow client was never dropped"
            await asyncio.to_thread(srv.publish, score(1, published % 90, pad=pad))
            published += 1
        await wait_until(lambda: srv.call(lambda: len(srv.realtime.hub.connections)) == 1)
        m = await scrape_async(srv)
        assert m.value("realtime_slow_consumer_disconnects_total") == 1
        assert m.value("realtime_connections_closed_total", code="4001") == 1
        assert m.value("realtime_outbound_queue_bytes_max") == 0
        # The healthy client kept receiving everything meanwhile.
        await healthy.wait_events(published)
        await healthy.close()
        with contextlib.suppress(websockets.ConnectionClosed):
            await slow.recv()  # the close frame, or the connection already gone
        await slow.close()
        sock.close()


def test_every_metric_is_exported_and_labels_are_bounded(server: RunningServer) -> None:
    m = scrape(server.http_url)
    names = set(m.families)
    for spec in METRICS:
        assert spec.exposed.removesuffix("_total") in names, spec.name
    # The standard process collector is there (memory and CPU).
    assert {"process_resident_memory_bytes", "process_cpu_seconds"} <= names
    assert {"python_info", "python_gc_objects_collected"} <= names

    assert close_code_label(4001) == "4001"
    assert close_code_label(1000) == "1000"
    assert close_code_label(3500) == "other"
    assert close_code_label(4777) == "other"
    many = {f"code_{i}": 1 for i in range(200)} | {"bad label\n": 5}
    folded = bounded(many)
    assert len(folded) <= 64
    assert sum(folded.values()) == 205
    assert folded["other"] == 205 - 63


async def test_each_app_owns_its_registry_and_host_apps_can_mount_it() -> None:
    from fastapi import FastAPI

    one = create_app(make_settings())
    two = create_app(make_settings())
    r1: Realtime = one.state.realtime
    r2: Realtime = two.state.realtime
    assert isinstance(r1.metrics_registry, CollectorRegistry)
    assert r1.metrics_registry is not r2.metrics_registry
    r1.stats.connections_opened = 5
    assert r1.metrics_registry.get_sample_value("realtime_connections_opened_total") == 5
    assert r2.metrics_registry.get_sample_value("realtime_connections_opened_total") == 0

    host = FastAPI(lifespan=r2.lifespan)
    host.include_router(r2.router, prefix="/live")
    mount_metrics(host, r2, "/ops/metrics")
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        r = await client.get("/ops/metrics")
        assert r.status_code == 200
        assert "realtime_connections_active 0.0" in r.text
        om = await client.get(
            "/ops/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
