"""Mounting the router in someone else's FastAPI app; the CLI and uvicorn entry points."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from football_realtime import Realtime, Settings

from .support import (
    ADMIN,
    JWT_SECRET,
    TIMEOUT,
    RunningServer,
    WSClient,
    admin_headers,
    free_port,
    start_serve_process,
)


def run_in_thread(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    return server, thread


async def test_router_mounts_in_a_host_app_and_publishes_in_process() -> None:
    """The host app's own routes keep working; our endpoints live under /realtime; the host
    publishes with ``await realtime.publish(...)``; stock uvicorn (ASGI send path)."""
    realtime = Realtime(Settings(admin_token=ADMIN, jwt_secret=JWT_SECRET))
    host = FastAPI(lifespan=realtime.lifespan)
    host.include_router(realtime.router, prefix="/realtime")

    @host.get("/predictions/{pid}")
    async def business(pid: int) -> dict[str, Any]:
        await realtime.publish(
            {
                "event_type": "prediction_updated",
                "data": {
                    "prediction_id": pid,
                    "match_id": 7,
                    "prediction": "draw",
                    "confidence": 0.5,
                    "home_win_prob": 0.3,
                    "draw_prob": 0.4,
                    "away_win_prob": 0.3,
                },
                "source": "prediction-service",
            }
        )
        return {"ok": True}

    port = free_port()
    server, thread = run_in_thread(host, port)
    try:
        async with await WSClient.connect(f"ws://127.0.0.1:{port}/realtime/ws") as c:
            await c.recv()
            await c.subscribe("predictions", match_ids=[7])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/predictions/3")).json() == {"ok": True}
                assert (await http.get("/realtime/health")).status_code == 200
            (ev,) = await c.events(1)
            assert ev["data"]["prediction_id"] == 3 and ev["source"] == "prediction-service"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


async def test_send_to_everyone_bypasses_subscriptions(server: RunningServer) -> None:
    async with (
        await WSClient.connect(server.ws_url) as a,
        await WSClient.connect(server.ws_url) as b,
    ):
        await a.recv()
        await b.recv()
        alert = {"event_type": "data_refresh", "data": {"data_type": "fixtures"}}
        assert server.call(lambda: server.realtime.send(alert, everyone=True)) == 2
        for c in (a, b):
            got = await c.wait_for(lambda m: m["event_type"] == "data_refresh")
            assert got["data"] == {"data_type": "fixtures"} and "offset" not in got


def test_two_apps_do_not_share_state() -> None:
    a = Realtime(Settings(admin_token=ADMIN))
    b = Realtime(Settings(admin_token=ADMIN))
    assert a.hub is not b.hub and a.broker is not b.broker and a.stats is not b.stats


async def test_python_m_serve_subprocess() -> None:
    sp = await asyncio.to_thread(start_serve_process)
    try:
        async with await WSClient.connect(sp.ws_url + "?user_id=cli") as c:
            assert (await c.recv())["data"]["user_id"] == "cli"
            await c.subscribe("system_alerts")
            body = {"event_type": "system_status", "data": {"status": "degraded"}}
            r = await asyncio.to_thread(
                httpx.post, f"{sp.http_url}/realtime/broadcast", json=body, headers=admin_headers()
            )
            assert r.status_code == 200
            (ev,) = await c.events(1)
            assert ev["data"]["status"] == "degraded"
    finally:
        sp.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal
    assert sp.proc.returncode in (0, -signal.SIGTERM)


def test_uvicorn_main_app_entry_point() -> None:
    port = free_port()
    env = {**os.environ, "REALTIME_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "football_realtime.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT * 2
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/realtime/health", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert r.json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)


def test_invalid_configuration_names_the_variable() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "football_realtime", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert r.returncode == 2
    assert "REALTIME_PORT" in r.stderr
