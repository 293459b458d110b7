"""``football-realtime serve --workers N``: N processes on one port, one service
(issue 15, item 6). Real processes: a redis-server and the supervisor on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from ..redis_server import RedisServer
from ..support import (
    ADMIN,
    JWT_SECRET,
    SEED_PREDICTION,
    TIMEOUT,
    WSClient,
    admin_headers,
    free_port,
)

pytestmark = pytest.mark.timeout(90)


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, port: int | None = None, path: str = "/realtime/health") -> str:
        return f"http://127.0.0.1:{port or self.port}{path}"

    def pids(self) -> dict[int, int]:
        """Worker index -> pid of its latest start, from the supervisor's log."""
        found = re.findall(r"worker (\d+) started: pid (\d+)", self.log())
        return {int(k): int(pid) for k, pid in found}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT * 4)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # the supervisor; its workers die with SIGKILL below
                for pid in self.pids().values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)


def free_port_block(n: int) -> int:
    """A free port P with P + 1 .. P + n free too (worker k also listens on P + k)."""
    for _ in range(100):
        port = free_port()
        held = []
        try:
            for k in range(1, n + 1):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no block of {n + 1} free ports")


def start_workers(tmp_path: Path, n: int, **env: str) -> Workers:
    port = free_port_block(n)
    log_path = tmp_path / "serve.log"
    full_env = {
        **os.environ,
        "REALTIME_ADMIN_TOKEN": ADMIN,
        "REALTIME_JWT_SECRET": JWT_SECRET,
        "REALTIME_LOG_LEVEL": "info",
        "REALTIME_ACCESS_LOG": "false",
        "REALTIME_CLUSTER_HEARTBEAT_INTERVAL": "0.5",
        **env,
    }
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "football_realtime",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(n),
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Workers(proc, port, log_path)


def wait_ready(w: Workers, n: int) -> None:
    """Every worker answers on its own port (port + k)."""
    deadline = time.monotonic() + TIMEOUT * 4
    for k in range(1, n + 1):
        while True:
            assert w.proc.poll() is None, w.log()[-3000:]
            assert time.monotonic() < deadline, f"worker {k} not ready:\n{w.log()[-3000:]}"
            try:
                if httpx.get(w.url(w.port + k), timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)


async def get(url: str) -> httpx.Response:
    return await asyncio.to_thread(httpx.get, url, timeout=TIMEOUT)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture
def two_workers(redis: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    w = start_workers(tmp_path, 2, REALTIME_BROKER_URL=redis.url)
    try:
        wait_ready(w, 2)
        yield w
    finally:
        w.stop()


async def test_clients_spread_over_workers_and_every_one_gets_each_event(
    two_workers: Workers,
) -> None:
    w = two_workers
    ws_url = f"ws://127.0.0.1:{w.port}/realtime/ws"
    ids = {k: (await get(w.url(w.port + k))).json()["instance_id"] for k in (1, 2)}
    assert ids[1] != ids[2] and ids[1].endswith("-1") and ids[2].endswith("-2")
    clients: list[WSClient] = []
    landed: dict[str, int] = {}
    try:
        # The kernel hashes each connection to a worker: at least 8 clients, and more
        # until both workers have some (40 on one worker: odds of 2**-39).
        while len(clients) < 8 or len(landed) < 2:
            assert len(clients) < 40, landed
            c = await WSClient.connect(f"{ws_url}?user_id=u{len(clients)}")
            clients.append(c)
            hello = await c.recv()
            iid = hello["data"]["instance_id"]
            landed[iid] = landed.get(iid, 0) + 1
            await c.subscribe("predictions")
        assert set(landed) == set(ids.values())

        # One event, published through whichever worker the kernel picks, reaches all.
        body = {"event_type": "prediction_created", "data": SEED_PREDICTION}
        r = await asyncio.to_thread(
            httpx.post,
            w.url(path="/realtime/broadcast"),
            json=body,
            headers=admin_headers(),
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text
        for c in clients:
            (ev,) = await c.events(1)
            assert ev["data"]["prediction_id"] == SEED_PREDICTION["prediction_id"]

        # Stats per process on port + k; the cluster section counts both workers.
        stats = (await get(w.url(w.port + 1, "/realtime/stats"))).json()
        assert stats["instance_id"] == ids[1]
        assert stats["active_connections"] == landed[ids[1]]
        metrics = (await get(w.url(w.port + 2, "/metrics"))).text
        assert f'instance_id="{ids[2]}"' in metrics
        deadline = time.monotonic() + TIMEOUT
        while True:  # registry figures are one heartbeat old
            cluster = (await get(w.url(path="/realtime/stats"))).json()["cluster"]
            if cluster["totals"]["active_connections"] == len(clients):
                break
            assert time.monotonic() < deadline, cluster
            await asyncio.sleep(0.1)

        # SIGTERM to the supervisor drains every worker: `closing`, then 1012; exit 0.
        w.proc.send_signal(signal.SIGTERM)
        for c in clients:
            closing = await c.wait_for(
                lambda m: (
                    m["event_type"] == "connection_status" and m["data"]["status"] == "closing"
                ),
                TIMEOUT * 2,
            )
            assert closing["data"]["reconnect"] is True
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(c.ws.recv(), TIMEOUT)
            assert c.ws.close_code == 1012
        assert await asyncio.to_thread(w.proc.wait, TIMEOUT * 4) == 0
        assert "every worker has stopped" in w.log()
    finally:
        for c in clients:
            await c.close()


def test_a_crashed_worker_is_started_again(two_workers: Workers) -> None:
    w = two_workers
    first = w.pids()
    before = httpx.get(w.url(w.port + 1), timeout=TIMEOUT).json()["instance_id"]
    os.kill(first[1], signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT * 4
    while True:
        assert time.monotonic() < deadline, w.log()[-3000:]
        try:
            now = httpx.get(w.url(w.port + 1), timeout=0.5).json()["instance_id"]
            if now != before:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    assert now == f"{before}.1"  # a new instance id: the dead one's registry entries expire
    assert w.pids()[1] != first[1] and w.pids()[2] == first[2]
    assert "worker 1 (pid" in w.log() and "starting it again" in w.log()
    assert w.stop() == 0


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_do_not_outlive_a_killed_supervisor(two_workers: Workers) -> None:
    w = two_workers
    pids = list(w.pids().values())
    assert len(pids) == 2 and all(running(p) for p in pids)
    w.proc.kill()
    w.proc.wait(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT * 3
    while any(running(p) for p in pids):  # the kernel's SIGTERM: each drains and exits
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)


def test_workers_refuse_the_memory_broker() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "football_realtime", "serve", "--workers", "2"],
        env={**os.environ, "REALTIME_BROKER_URL": "memory://"},
        capture_output=True,
        timeout=TIMEOUT * 4,
    )
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "REALTIME_WORKERS=2 needs a broker the processes share" in err, err
    assert "REALTIME_BROKER_URL=redis://" in err


@pytest.mark.parametrize("fault", ["port + 1 taken", "no such certificate"])
def test_a_worker_that_cannot_start_stops_the_service(
    fault: str, redis: RedisServer, tmp_path: Path
) -> None:
    """Exit 3 (uvicorn's startup failure) with the reason, not a loop of restarts."""
    port = free_port_block(2)
    blocker = socket.socket()
    args: tuple[str, ...] = ()
    try:
        if fault == "port + 1 taken":
            blocker.bind(("127.0.0.1", port + 1))
            blocker.listen()
            reason = f"worker 1 cannot bind its own port 127.0.0.1:{port + 1}"
        else:
            missing = str(tmp_path / "missing.pem")
            args = ("--ssl-certfile", missing, "--ssl-keyfile", missing)
            reason = "worker failed"
        r = subprocess.run(
            [sys.executable, "-m", "football_realtime", "serve", "--port", str(port),
             "--workers", "2", *args],
            env={**os.environ, "REALTIME_BROKER_URL": redis.url, "REALTIME_ADMIN_TOKEN": ADMIN},
            capture_output=True,
            timeout=TIMEOUT * 6,
        )  # fmt: skip
    finally:
        blocker.close()
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 3, err[-3000:]
    assert reason in err and "failed to start; stopping" in err, err[-3000:]
    assert "starting it again" not in err
