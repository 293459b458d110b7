"""Test support: a real server on a free port, and real WebSocket clients.

Every timeout derives from ``UNIT`` (scale it with REALTIME_TEST_UNIT on a slow machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import orjson
import uvicorn
import websockets

from football_realtime.app import Realtime, create_app
from football_realtime.config import Settings
from football_realtime.server import uvicorn_config

UNIT = float(os.environ.get("REALTIME_TEST_UNIT", "1.0"))
TIMEOUT = 5.0 * UNIT
ADMIN = "test-admin-token"
#: HS256 secret every test server accepts (make_settings); ``token()`` signs with it.
#: The seed's prediction_created example (事件详细说明).
SEED_PREDICTION = {
    "prediction_id": 123,
    "match_id": 456,
    "home_team": "曼联",
    "away_team": "切尔西",
    "prediction": "home_win",
    "confidence": 0.75,
    "home_win_prob": 0.65,
    "draw_prob": 0.25,
    "away_win_prob": 0.10,
    "expected_value": 0.12,
    "strategy": "ml_ensemble",
}

JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123456789"


def token(
    user_id: str = "user-1",
    tier: str | None = "premium",
    *,
    ttl: float = 3600.0,
    secret: str = JWT_SECRET,
    **claims: Any,
) -> str:
    """A valid HS256 token for the test servers (``tier=None`` leaves the claim out)."""
    # A float exp (NumericDate allows it) keeps short test lifetimes exact.
    body: dict[str, Any] = {"user_id": user_id, "exp": round(time.time() + ttl, 3)}
    if tier is not None:
        body["tier"] = tier
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin_headers(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class RunningServer:
    """A real uvicorn server, in a thread of this process, on a free port."""

    settings: Settings
    fast: bool = True
    port: int = field(default_factory=free_port)
    #: builds the ASGI app from the settings (e.g. the demo app); default: the service
    app_factory: Callable[[Settings], Any] = create_app
    app: Any = None
    server: uvicorn.Server | None = None
    #: The WebSocket layer's per-server state (open connections, keepalive wheel).
    ws_layer: Any = None
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def realtime(self) -> Realtime:
        rt: Realtime = self.app.state.realtime
        return rt

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/ws"

    def url(self, path: str = "/realtime/ws", **query: str) -> str:
        """A ws:// URL on this server, e.g. ``srv.url(token=token())``."""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{qs}" if qs else "")

    @property
    def premium_url(self) -> str:
        """``ws_url`` with a premium token for ``user-1`` (every event, unfiltered)."""
        return self.url(token=token())

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningServer:
        self.app = self.app or self.app_factory(self.settings)
        # The options `serve` ships (WebSocket layer, limits, timeouts), on our port.
        # As `serve` does: an app built by create_app has its WebSocket routes called
        # directly (an app given with an extra route keeps that route on the app).
        routes = self.realtime.ws_routes() if self.app_factory is create_app else None
        config = uvicorn_config(
            self.app,
            self.settings,
            fast=self.fast,
            routes=routes,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.ws_layer = getattr(config.ws, "layer", None)
        self.server = uvicorn.Server(config)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            assert self.server is not None
            task = loop.create_task(self.server.serve())
            ready.set()
            loop.run_until_complete(task)
            loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (thread-safe) and return its result."""
        assert self.loop is not None

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(TIMEOUT)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def publish(self, event: dict[str, Any], **kw: Any) -> Any:
        return self.run(self.realtime.publish(event, **kw))

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(TIMEOUT * 2)


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "admin_token": ADMIN,
        "log_level": "warning",
        "access_log": False,
        "jwt_secret": JWT_SECRET,
    }
    base.update(overrides)
    return Settings(**base)


@contextlib.contextmanager
def running_server(fast: bool = True, app: Any = None, **overrides: Any) -> Iterator[RunningServer]:
    """A started server; ``app`` replaces the app built from the settings (e.g. with
    an extra test route)."""
    srv = RunningServer(make_settings(**overrides), fast=fast, app=app).start()
    try:
        yield srv
    finally:
        srv.stop()


class WSClient:
    """A thin real WebSocket client that parses JSON frames and waits on conditions."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self._next_id = 0

    @classmethod
    async def connect(cls, url: str, tier: str | None = "premium", **kw: Any) -> WSClient:
        """Connect as a user of ``tier`` (a Bearer token for the URL's ``user_id``, or
        ``user-1``), so tests see every event; ``tier=None``: anonymous (the free tier,
        or waiting for ``auth`` under REALTIME_REQUIRE_AUTH), or the URL's own token."""
        query = parse_qs(urlsplit(url).query)
        if tier is not None and "token" not in query:
            user = query.get("user_id", ["user-1"])[0]
            headers = dict(kw.pop("additional_headers", None) or {})
            headers.setdefault("Authorization", f"Bearer {token(user, tier)}")
            kw["additional_headers"] = headers
        ws = await websockets.connect(url, open_timeout=TIMEOUT, **kw)
        return cls(ws)

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> WSClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        msg: dict[str, Any] = orjson.loads(raw)
        return msg

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Receive until a message satisfies ``pred``; earlier ones are kept in ``inbox``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("condition not met; inbox: " + repr(self.inbox[-5:]))
            msg = await self.recv(left)
            if pred(msg):
                return msg
            self.inbox.append(msg)

    async def request(self, type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and return its reply (``message_ack`` or ``error``)."""
        self._next_id += 1
        rid = f"r{self._next_id}"
        msg: dict[str, Any] = {"type": type_, "id": rid}
        if data is not None:
            msg["data"] = data
        await self.ws.send(orjson.dumps(msg).decode())
        return await self.wait_for(
            lambda m: m["event_type"] in ("message_ack", "error") and m["data"].get("id") == rid
        )

    async def subscribe(
        self, subscription_type: str | None = None, **filters: Any
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"filters": filters}
        if subscription_type is not None:
            data["subscription_type"] = subscription_type
        reply = await self.request("subscribe", data)
        assert reply["event_type"] == "message_ack", reply
        result: dict[str, Any] = reply["data"]["result"]
        return result

    async def events(self, n: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """The next ``n`` published events (messages carrying a stream offset)."""
        got = [m for m in self.inbox if "offset" in m]
        self.inbox = [m for m in self.inbox if "offset" not in m]
        while len(got) < n:
            got.append(await self.wait_for(lambda m: "offset" in m, timeout))
        return got

    async def expect_silence(self, seconds: float = 0.3 * UNIT) -> None:
        """Assert no published event arrives for ``seconds`` (used after a barrier)."""
        with contextlib.suppress(TimeoutError):
            m = await self.wait_for(lambda m: "offset" in m, seconds)
            raise AssertionError(f"unexpected event {m}")


async def barrier(client: WSClient) -> None:
    """A round trip: everything the server sent this client before is now in its inbox."""
    reply = await client.request("heartbeat")
    assert reply["event_type"] == "message_ack"


def post_broadcast(srv: RunningServer, body: dict[str, Any], **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", admin_headers())
    return httpx.post(
        f"{srv.http_url}/realtime/broadcast", json=body, headers=headers, timeout=TIMEOUT, **kw
    )


@dataclass
class ServeProcess:
    """``python -m football_realtime serve`` as a subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    tls: bool = False

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/realtime/ws"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    captured: str = ""

    def output(self) -> str:
        """Everything the process wrote (stdout and stderr); call after ``stop``."""
        return self.captured

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT * 2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.captured = self.proc.stdout.read().decode(errors="replace")
            self.proc.stdout.close()


def start_serve_process(
    env: dict[str, str] | None = None,
    port: int | None = None,
    args: tuple[str, ...] = (),
    verify: Any = True,
) -> ServeProcess:
    """``args``: extra ``serve`` flags (``--ssl-certfile`` and ``--ssl-keyfile`` switch
    the URLs to wss/https; ``verify`` is then the CA file for the health check)."""
    port = port or free_port()
    full_env = {
        **os.environ,
        "REALTIME_ADMIN_TOKEN": ADMIN,
        "REALTIME_LOG_LEVEL": "warning",
        "REALTIME_JWT_SECRET": JWT_SECRET,
    }
    full_env.update(env or {})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "football_realtime",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sp = ServeProcess(proc, port, tls="--ssl-certfile" in args)
    deadline = time.monotonic() + TIMEOUT * 3
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            sp.stop()
            raise RuntimeError(f"serve exited early: {out}")
        try:
            health = httpx.get(f"{sp.http_url}/realtime/health", timeout=0.5, verify=verify)
            if health.status_code == 200:
                return sp
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    sp.stop()
    raise RuntimeError("serve did not become healthy")
