"""The demo app and CLI against real servers: dashboard, tokens, state, live events,
and ``--publisher-only`` publishing into a separately running service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import jwt
import pytest

from football_realtime.cli import build_parser, main
from football_realtime.config import Settings
from football_realtime.demo.app import DemoOptions, create_demo_app
from football_realtime.demo.cli import demo_settings
from football_realtime.demo.simulation import SimConfig

from ..support import (
    ADMIN,
    TIMEOUT,
    RunningServer,
    WSClient,
    free_port,
    make_settings,
    start_serve_process,
)

SECRET = "test-demo-secret-0123456789-abcdef"


@pytest.fixture
def demo() -> Iterator[RunningServer]:
    options = DemoOptions(sim=SimConfig(speed=1200, matches=4), seed=5, jwt_secret=SECRET)
    srv = RunningServer(make_settings(), app_factory=lambda s: create_demo_app(s, options))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def get(srv: RunningServer, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(srv.http_url + path, timeout=TIMEOUT, **kw)


def test_serves_the_dashboard(demo: RunningServer) -> None:
    index = get(demo, "/")
    assert index.status_code == 200
    assert '<div id="root">' in index.text
    scripts = [p.split('"')[0] for p in index.text.split('src="')[1:]]
    assert scripts and all(get(demo, s).status_code == 200 for s in scripts)
    js = httpx.get(demo.http_url + scripts[0], headers={"Accept-Encoding": "gzip"}, timeout=TIMEOUT)
    assert js.headers["content-encoding"] == "gzip"
    assert js.num_bytes_downloaded < 150_000 < len(js.content)
    assert get(demo, "/favicon.svg").status_code == 200
    # the service's own routes are not shadowed by the static mount
    assert get(demo, "/realtime/health").json()["status"] == "ok"


def secret_of(srv: RunningServer) -> str:
    s: str = srv.app.state.demo.jwt_secret
    return s


def test_tokens_for_a_paid_and_a_free_viewer(demo: RunningServer) -> None:
    for tier in ("premium", "free"):
        body = get(demo, f"/demo/token?tier={tier}").json()
        claims = jwt.decode(body["token"], secret_of(demo), algorithms=["HS256"])
        assert claims["tier"] == tier == body["tier"]
        assert claims["user_id"] == body["user_id"]
        assert claims["exp"] > time.time() + 3600
    bad = get(demo, "/demo/token?tier=gold")
    assert bad.status_code == 422
    assert "'free' or 'premium'" in bad.text


def test_state_by_tier(demo: RunningServer) -> None:
    premium = get(demo, "/demo/token?tier=premium").json()["token"]
    free = get(demo, "/demo/token?tier=free").json()["token"]
    p = get(demo, "/demo/state", params={"token": premium}).json()
    f = get(demo, "/demo/state", params={"token": free}).json()
    anonymous = get(demo, "/demo/state").json()
    assert p["tier"] == "premium" and f["tier"] == anonymous["tier"] == "free"
    assert p["seed"] == 5 and len(p["matches"]) >= 4
    assert any("prediction" in m for m in p["matches"])
    assert not any("prediction" in m for m in f["matches"])
    forged = jwt.encode(
        {"tier": "premium", "exp": time.time() + 60}, "another-secret-" * 3, algorithm="HS256"
    )
    r = get(demo, "/demo/state", params={"token": forged})
    assert r.status_code == 401 and "invalid token" in r.text
    expired = jwt.encode(
        {"tier": "premium", "exp": time.time() - 60}, secret_of(demo), algorithm="HS256"
    )
    r = get(demo, "/demo/state", params={"token": expired})
    assert r.status_code == 401 and "expired" in r.text


async def test_simulated_services_publish_live_events(demo: RunningServer) -> None:
    async with await WSClient.connect(demo.ws_url) as ws:
        await ws.wait_for(lambda m: m["event_type"] == "connection_status")
        await ws.subscribe("matches", leagues=["英超", "西甲"])
        await ws.subscribe("predictions", min_confidence=0.5)
        events = await ws.events(15, timeout=TIMEOUT * 2)
    for ev in events:
        assert ev["source"] in ("data-service", "prediction-service")
        assert ev["stream"] in ("matches", "predictions")
        if ev["stream"] == "matches":
            assert ev["data"]["league"] in ("英超", "西甲")
        else:
            assert ev["data"]["confidence"] >= 0.5


def test_missing_dashboard_gets_a_clear_page(tmp_path: Any) -> None:
    app = create_demo_app(make_settings(), DemoOptions(static_dir=tmp_path))
    srv = RunningServer(make_settings(), app_factory=lambda s: app).start()
    try:
        r = get(srv, "/")
        assert r.status_code == 503 and "Dashboard not built" in r.text
    finally:
        srv.stop()


def test_demo_flags_pass_through_to_the_service_settings() -> None:
    args = build_parser().parse_args(
        ["demo", "--host", "0.0.0.0", "--port", "8123", "--broker", "redis://127.0.0.1:6390/0"]
    )
    s: Settings = demo_settings(args)
    assert (s.host, s.port, s.broker_url) == ("0.0.0.0", 8123, "redis://127.0.0.1:6390/0")
    assert s.access_log is False
    args = build_parser().parse_args(["demo", "--broker-url", "memory://", "--access-log"])
    s = demo_settings(args)
    assert (s.broker_url, s.access_log) == ("memory://", True)


def test_bad_demo_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--matches", "0"]) == 2
    assert "matches must be between 1 and 200" in capsys.readouterr().err
    assert main(["demo", "--speed", "-1"]) == 2
    assert "speed" in capsys.readouterr().err
    assert main(["demo", "--port", "99999"]) == 2
    assert "REALTIME_PORT" in capsys.readouterr().err


def _demo_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "football_realtime", "demo", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_publisher_only_publishes_into_a_running_service() -> None:
    svc = start_serve_process()
    pub = _demo_cli(
        "--publisher-only", "--url", svc.http_url, "--speed", "1200", "--seed", "3",
        env={"REALTIME_ADMIN_TOKEN": ADMIN},
    )  # fmt: skip
    try:
        async with await WSClient.connect(svc.ws_url) as ws:
            await ws.subscribe("matches")
            await ws.subscribe("predictions")
            events = await ws.events(10, timeout=TIMEOUT * 2)
        types = {e["event_type"] for e in events}
        assert types & {"prediction_created", "match_status_changed", "match_started"}
    finally:
        out = _stop(pub)
        svc.stop()
    assert f"publishing into {svc.http_url}" in out


def test_publisher_only_needs_the_admin_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REALTIME_ADMIN_TOKEN"}
    r = subprocess.run(
        [sys.executable, "-m", "football_realtime", "demo", "--publisher-only"],
        env=env,
        capture_output=True,
        timeout=TIMEOUT * 2,
    )
    assert r.returncode == 2
    assert b"--admin-token or REALTIME_ADMIN_TOKEN" in r.stderr


def test_publisher_only_stops_on_a_wrong_token() -> None:
    svc = start_serve_process()
    try:
        pub = _demo_cli("--publisher-only", "--url", svc.http_url, "--admin-token", "wrong")
        out = pub.communicate(timeout=TIMEOUT * 2)[0].decode()
    finally:
        svc.stop()
    assert pub.returncode == 1
    assert "401" in out and "invalid admin token" in out


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, and the output; a process that does not exit in time fails the test."""
    proc.terminate()
    try:
        out = proc.communicate(timeout=TIMEOUT * 2)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
        raise AssertionError("did not exit on SIGTERM:\n" + out.decode()[-3000:]) from None
    return out.decode()


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT * 3
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/realtime/health").json()
            return body
        time.sleep(0.05)
    raise AssertionError("demo did not become healthy")


async def test_demo_on_the_redis_broker_reaches_another_instance() -> None:
    """`demo --broker redis://...`: the simulated services publish through Redis, so a
    second `serve` instance on the same Redis delivers the demo's events too."""
    from ..redis_server import RedisServer

    with RedisServer() as redis:
        port = free_port()
        demo = _demo_cli(
            "--host", "127.0.0.1", "--port", str(port), "--broker", redis.url,
            "--speed", "1200", "--seed", "4",
            env={"REALTIME_ADMIN_TOKEN": ADMIN, "REALTIME_LOG_LEVEL": "warning"},
        )  # fmt: skip
        other = None
        try:
            health = _wait_healthy(port, demo)
            assert health.get("broker") == "redis", health
            other = start_serve_process(env={"REALTIME_BROKER_URL": redis.url})
            async with await WSClient.connect(other.ws_url) as ws:
                await ws.subscribe("predictions")
                await ws.subscribe("matches")
                events = await ws.events(5, timeout=TIMEOUT * 2)
            assert {e["source"] for e in events} <= {"data-service", "prediction-service"}
        finally:
            if other is not None:
                other.stop()
            _stop(demo)


def test_the_demo_s_free_viewer_gets_scores_late_over_rest_and_websocket() -> None:
    """The demo's tiers (``demo_tiers``, as ``demo --free-delay`` sets them): the free
    viewer's ``/demo/state`` is the world as it was a delay ago, and a goal reaches its
    WebSocket that much later than the premium viewer's."""
    delay = 1.5
    args = build_parser().parse_args(["demo", "--free-delay", str(delay)])
    settings = demo_settings(args, SECRET)
    assert settings.tiers["free"]["delay_seconds"] == {"matches": delay}
    assert settings.tiers["free"]["min_interval_seconds"] == {"odds_updated": 10.0}
    options = DemoOptions(sim=SimConfig(speed=600, matches=4), seed=5, jwt_secret=SECRET)
    srv = RunningServer(
        make_settings(tiers=settings.tiers), app_factory=lambda s: create_demo_app(s, options)
    )
    srv.start()
    try:
        free_token = get(srv, "/demo/token", params={"tier": "free"}).json()["token"]
        paid_token = get(srv, "/demo/token", params={"tier": "premium"}).json()["token"]
        started = time.time()
        while time.time() - started < 2 * delay:
            time.sleep(0.1)  # the demo runs for twice the delay (a duration, not an order)
        asked = time.time()
        state = get(srv, "/demo/state", params={"token": free_token}).json()
        assert state["timeliness"]["delay_seconds"]["match_score_changed"] == delay
        taken = datetime.fromisoformat(state["server_time"].replace("Z", "+00:00")).timestamp()
        # the newest sample at least the delay old (samples every 0.5 s)
        assert delay <= asked - taken <= delay + 0.5 + TIMEOUT
        paid = get(srv, "/demo/state", params={"token": paid_token}).json()
        assert "timeliness" not in paid
        assert (
            datetime.fromisoformat(paid["server_time"].replace("Z", "+00:00")).timestamp() >= asked
        )

        async def goal() -> tuple[float, float]:
            url = srv.url(token=free_token)
            async with (
                await WSClient.connect(url, tier=None) as free,
                await WSClient.connect(srv.url(token=paid_token), tier=None) as paid_ws,
            ):
                for c in (free, paid_ws):
                    await c.subscribe("matches", match_ids=[999_001])
                t0 = time.time()
                r = await asyncio.to_thread(
                    httpx.post,
                    srv.http_url + "/realtime/broadcast",
                    json={
                        "event_type": "match_score_changed",
                        "data": {"match_id": 999_001, "home_score": 1, "away_score": 0},
                    },
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=TIMEOUT,
                )
                assert r.status_code == 200, r.text
                await paid_ws.events(1)
                t_paid = time.time() - t0
                await free.events(1, timeout=TIMEOUT + delay)
                return t_paid, time.time() - t0

        t_paid, t_free = asyncio.run(goal())
        assert t_free >= delay - 0.05 and t_paid < t_free
    finally:
        srv.stop()
