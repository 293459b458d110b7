"""A consumer process killed with SIGKILL while events keep being published, and an
instance killed under a live consumer: the application (``football-realtime listen
--session``, whose output is its side effect) sees every event exactly once, in order.

The consumer is killed between two events (the publisher pauses until the consumer has
taken everything so far: its store names the last offset it printed), and goals keep
coming while it is down. Killed in the middle of one event, after its line was printed
and before the client recorded it as taken, that one event would be printed again on
restart: no client can close that window for a side effect that is not transactional
(docs/clients-python.md says so); what this test checks is that nothing else repeats and
nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ..client_support import TcpProxy, score, until, valid_token
from ..cluster_support import instances
from ..redis_server import RedisServer
from ..support import ADMIN, TIMEOUT, RunningServer

N = 240


class Consumer:
    """``football-realtime listen --session`` writing JSON lines to one file (appended to
    by every run), its notes to another."""

    def __init__(self, url: str, workdir: Path, user: str) -> None:
        self.url = url
        self.out = workdir / "events.jsonl"
        self.err = workdir / "listen.log"
        self.store_dir = workdir / "sessions"
        self.token = valid_token(user)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "football_realtime",
            "listen",
            "--url",
            self.url,
            "--type",
            "matches",
            "--match-ids",
            "1",
            "--json",
            "--session",
            "consumer",
            "--session-dir",
            str(self.store_dir),
            "--token",
            self.token,
            "--heartbeat-interval",
            "1",
        ]
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def taken(self) -> int | None:
        """The offset the consumer's session store says its application took last."""
        path = self.store_dir / "consumer.json"
        with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError, KeyError):
            return int(orjson.loads(path.read_bytes())["positions"]["matches"]["offset"])
        return None

    def subscribed(self) -> int:
        return (
            self.err.read_text(errors="replace").count("listen: subscribed")
            if (self.err.exists())
            else 0
        )

    def offsets(self) -> list[int]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                msg = orjson.loads(line)
                if msg.get("event_type") == "match_score_changed":
                    out.append(msg["offset"])
        return out


@contextlib.contextmanager
def consumer(url: str, workdir: Path, user: str) -> Iterator[Consumer]:
    c = Consumer(url, workdir, user)
    try:
        yield c
    finally:
        c.stop()


class Publisher:
    """Publishes N goals for match 1 at a steady pace, counting them; ``paused`` holds it
    between two events."""

    def __init__(self, publish: Any) -> None:
        self.publish = publish
        self.sent = 0
        self.running = asyncio.Event()
        self.running.set()
        self.idle = asyncio.Event()

    async def run(self, n: int = N) -> None:
        for i in range(n):
            if not self.running.is_set():
                self.idle.set()
                await self.running.wait()
                self.idle.clear()
            await asyncio.to_thread(self.publish, score(1, i))
            self.sent += 1
            await asyncio.sleep(0.025)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        self.running.clear()
        await asyncio.wait_for(self.idle.wait(), TIMEOUT)
        try:
            yield
        finally:
            self.running.set()


def assert_exactly_once_in_order(got: list[int], log: str) -> None:
    assert got == list(range(1, N + 1)), (
        f"missing {sorted(set(range(1, N + 1)) - set(got))[:20]}, "
        f"duplicated {sorted({o for o in got if got.count(o) > 1})[:20]}\n{log[-2000:]}"
    )


async def test_consumer_killed_mid_stream_gets_every_event_once(
    server: RunningServer, tmp_path: Path
) -> None:
    with consumer(server.ws_url, tmp_path, "killed") as c:
        c.start()
        await until(lambda: c.subscribed() == 1, TIMEOUT * 2)
        pub = Publisher(server.publish)
        publishing = asyncio.create_task(pub.run())
        try:
            for round_ in (1, 2):  # killed twice, each time while events keep coming
                await until(lambda r=round_: len(c.offsets()) >= 50 * r, TIMEOUT * 2)
                async with pub.paused():
                    # Between two events: everything published is printed and taken.
                    await until(lambda: c.offsets()[-1:] == [pub.sent] == [c.taken()], TIMEOUT)
                    c.kill()
                missed_from = pub.sent
                await until(lambda m=missed_from: pub.sent >= m + 30, TIMEOUT)
                c.start()
            await publishing
            await until(lambda: len(c.offsets()) >= N, TIMEOUT * 3)
        finally:
            publishing.cancel()
        assert_exactly_once_in_order(c.offsets(), c.err.read_text(errors="replace"))
        assert "resumed" in c.err.read_text()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


async def test_instance_killed_consumer_resumes_on_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    import httpx

    with (
        instances(["a", "b"], redis_server.url) as (a, b),
        httpx.Client(
            base_url=b.http_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=TIMEOUT
        ) as http,
    ):

        def publish(event: dict[str, Any]) -> None:
            r = http.post("/realtime/broadcast", json=event)
            assert r.status_code == 200, r.text

        async with TcpProxy(a.port) as proxy:
            with consumer(proxy.url(), tmp_path, "moved") as c:
                c.start()
                await until(lambda: c.subscribed() == 1, TIMEOUT * 2)
                pub = Publisher(publish)
                publishing = asyncio.create_task(pub.run())
                try:
                    await until(lambda: len(c.offsets()) >= 50, TIMEOUT * 2)
                    proxy.target_port = b.port  # the next connection reaches b
                    a.kill()
                    proxy.cut()
                    await publishing
                    await until(lambda: len(c.offsets()) >= N, TIMEOUT * 3)
                finally:
                    publishing.cancel()
                log = c.err.read_text(errors="replace")
                assert_exactly_once_in_order(c.offsets(), log)
                assert "(connection" in log and log.count("connected to") >= 2
                stats = b.get("/realtime/stats").json()
                assert stats["sessions_resumed"] == 1
