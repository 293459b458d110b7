"""The built image, proven with real containers. Run by scripts/image-test.sh:

    .venv/bin/python -m tests.container_checks --docker DOCKER --image football-realtime:0.1.0 \\
        --infra football-realtime-base/infra:bookworm --run-id ID --logs DIR

Part 1, one container as `docker run` starts it from the image's own settings, with a
read-only root filesystem (`--read-only --tmpfs /tmp`) and its port published on 127.0.0.1:
the image's metadata (user, port, HEALTHCHECK); GET /realtime/health and
/realtime/health/live answer 200; PID 1 is `football-realtime serve` running as uid
10001; the root filesystem refuses writes while /tmp takes them; a WebSocket client
subscribes and receives an event published with POST /realtime/broadcast and the admin
token (and the same POST without the token is refused); the dashboard in the image is
byte for byte the committed build; every log line is JSON; Docker's HEALTHCHECK turns
`healthy`; `docker stop` drains: a connected client gets the `closing` status and close
code 1012, the process exits 0 well within the stop timeout.

Part 2, the seed's deployment as containers on a user-defined network: Redis with the
command, user and probe of deploy/k8s/redis.yaml (password, append-only file, noeviction),
three replicas of the image with the settings of deploy/k8s/configmap.yaml and the stop
grace period of deploy/k8s/deployment.yaml, and nginx configured by deploy/nginx.conf (only
its upstream addresses rewritten to the replicas' names, as tests/nginx_server.py does).
Only nginx's and the replicas' ports are published, on 127.0.0.1. Checks: the cluster
answers through nginx (three instances registered, /metrics hidden); clients connected
through nginx land on all three replicas and each receives the events published on every
replica; then, while events keep being published, one replica is killed (`docker kill`)
and another drained (`docker stop`): the raw client on the drained one sees 1012 through
nginx, and Python clients (`football_realtime.client.RealtimeClient`) that were on them
reconnect through nginx to the survivor and recover: each receives every published event
exactly once, in order.

Every container and the network carry the label football-realtime.image-test=<run id>
and are removed on the way out (scripts/image-test.sh removes them too if this process
dies); their logs are saved under --logs. One line per check; exit status 0 only if all
pass. tests/test_deploy.py holds the Kubernetes manifests to the constants below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import websockets
import yaml
from websockets.asyncio.client import ClientConnection

from football_realtime.client import RealtimeClient, RecoveryFailed
from football_realtime.core.close_codes import CloseCode

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
STATIC = ROOT / "src" / "football_realtime" / "static"

# What the image is and what is checked of it (tests/test_deploy.py compares the
# Kubernetes manifests with these).
IMAGE_REPOSITORY = "football-realtime"
APP_UID = 10001
CONTAINER_PORT = 8000
HEALTH_PATH = "/realtime/health"
LIVE_PATH = "/realtime/health/live"
RESTART_CODE = int(CloseCode.SERVICE_RESTART)  # 1012, what SIGTERM sends to clients
#: `docker run --stop-timeout` of the single container: above the image's default
#: REALTIME_SHUTDOWN_TIMEOUT (10 s), as an orchestrator's grace period must be.
STOP_TIMEOUT = 15
LABEL = "football-realtime.image-test"
SITE_PACKAGES_STATIC = "/opt/venv/lib/python3.11/site-packages/football_realtime/static"

WAIT = 30.0  # upper bound of any single wait, seconds
POLL = 0.1


def image_tag() -> str:
    """`football-realtime:<version of pyproject.toml>`: what image-test.sh builds and
    deploy/k8s runs."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"{IMAGE_REPOSITORY}:{version}"


class CheckFailed(AssertionError):
    pass


def ok(what: str, detail: str = "") -> None:
    print(f"  ok  {what}" + (f"  [{detail}]" if detail else ""), flush=True)


def check(cond: object, what: str, detail: str = "") -> None:
    if not cond:
        raise CheckFailed(f"{what}  [{detail}]" if detail else what)
    ok(what, detail)


def until(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``probe`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def premium_token(user_id: str, secret: str) -> str:
    """A token of the paid tier: the free tier receives only two event types."""
    body = {"user_id": user_id, "tier": "premium", "exp": int(time.time()) + 3600}
    return jwt.encode(body, secret, algorithm="HS256")


def score(match_id: int, n: int) -> dict[str, Any]:
    return {
        "event_type": "match_score_changed",
        "data": {
            "match_id": match_id,
            "league": "英超",
            "home_score": n,
            "away_score": 0,
            "minute": n % 90,
        },
    }


# -- docker ----------------------------------------------------------------------------


class Docker:
    """The docker CLI, for the containers of one run (all labelled with its id)."""

    def __init__(self, cli: str, run_id: str, logdir: Path) -> None:
        self.cli = cli
        self.run_id = run_id
        self.logdir = logdir

    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def __call__(self, *args: str, timeout: float = 120) -> str:
        r = self.run_cli(*args, timeout=timeout)
        if r.returncode != 0:
            raise CheckFailed(f"docker {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout.strip()

    def name(self, role: str) -> str:
        return f"frt-{self.run_id}-{role}"

    def network(self, role: str) -> str:
        name = self.name(role)
        self("network", "create", "--label", f"{LABEL}={self.run_id}", name)
        return name

    def start(
        self,
        role: str,
        image: str,
        *command: str,
        env: dict[str, str] | None = None,
        network: str | None = None,
        publish: int | None = None,
        read_only: bool = True,
        tmpfs: tuple[str, ...] = ("/tmp",),
        options: tuple[str, ...] = (),
    ) -> str:
        name = self.name(role)
        args = ["run", "-d", "--name", name, "--label", f"{LABEL}={self.run_id}"]
        if network is not None:
            args += ["--network", network, "--network-alias", role]
        if publish is not None:
            args += ["-p", f"127.0.0.1::{publish}"]  # a free port, loopback only
        if read_only:
            args.append("--read-only")
        for path in tmpfs:
            args += ["--tmpfs", path]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        self(*args, *options, image, *command)
        return name

    def published_port(self, name: str, port: int) -> int:
        bound = self("port", name, f"{port}/tcp").splitlines()
        hosts = {b.rpartition(":")[0] for b in bound}
        if hosts != {"127.0.0.1"}:
            raise CheckFailed(f"{name}: port {port} published on {hosts}, not only 127.0.0.1")
        return int(bound[0].rpartition(":")[2])

    def state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self("inspect", "-f", "{{json .State}}", name))
        return state

    def logs(self, name: str) -> str:
        r = self.run_cli("logs", name)
        return r.stdout + r.stderr

    def exec(self, name: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.run_cli("exec", name, *command, timeout=WAIT)

    def containers(self) -> list[str]:
        out = self("ps", "-a", "--filter", f"label={LABEL}={self.run_id}", "--format", "{{.Names}}")
        return out.split()

    def save_logs(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for name in self.containers():
            (self.logdir / f"{name}.log").write_text(self.logs(name))

    def remove_all(self) -> None:
        names = self.containers()
        if names:
            self("rm", "-f", *names)
        nets = self("network", "ls", "-q", "--filter", f"label={LABEL}={self.run_id}").split()
        if nets:
            self("network", "rm", *nets)


def wait_http(d: Docker, name: str, url: str) -> httpx.Response:
    """GET ``url`` until it answers 200, failing early (with its log) if the container
    stops."""

    def probe() -> httpx.Response | None:
        if not d.state(name)["Running"]:
            raise CheckFailed(f"{name} stopped:\n{d.logs(name)[-3000:]}")
        try:
            r = httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return None
        return r if r.status_code == 200 else None

    response: httpx.Response = until(f"{url} to answer 200", probe)
    return response


# -- a raw protocol client -------------------------------------------------------------


class Raw:
    """The wire protocol by hand: connect, subscribe, keep events, statuses, close code."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.hello: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def instance(self) -> str:
        return str(self.hello["instance_id"])

    async def open(self, filters: dict[str, Any]) -> dict[str, Any]:
        self.ws = await websockets.connect(self.url, open_timeout=WAIT)
        hello = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
        if hello["data"]["status"] != "connected":
            raise CheckFailed(f"first message is not connection_status connected: {hello}")
        self.hello = hello["data"]
        self._reader = asyncio.create_task(self._read())
        sub = {"subscription_type": "matches", "filters": filters}
        await self.ws.send(json.dumps({"type": "subscribe", "id": 1, "data": sub}))
        reply = await asyncio.wait_for(self._acks.get(), WAIT)
        if reply["event_type"] != "message_ack":
            raise CheckFailed(f"subscribe refused: {reply}")
        result: dict[str, Any] = reply["data"]["result"]
        return result

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                kind = msg.get("event_type")
                if kind in ("message_ack", "error"):
                    self._acks.put_nowait(msg)
                elif kind == "connection_status":
                    self.statuses.append(msg["data"])
                elif "offset" in msg:
                    self.events.append(msg)
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        await self.ws.wait_closed()
        self.close_code = self.ws.close_code or 1006  # 1006: no close frame came
        self._changed.set()

    async def wait(self, what: str, cond: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                await self._changed.wait()
        if not cond():  # pragma: no cover - the loop only ends when it holds
            raise CheckFailed(what)

    async def wait_offset(self, offset: int) -> None:
        try:
            await self.wait(
                f"offset {offset}", lambda: any(e["offset"] >= offset for e in self.events)
            )
        except TimeoutError:
            got = [e["offset"] for e in self.events]
            raise CheckFailed(
                f"client on {self.instance}: no event at {offset}; got {got}"
            ) from None

    async def wait_closed(self) -> int:
        try:
            await self.wait("closed", lambda: self.close_code is not None)
        except TimeoutError:
            raise CheckFailed(f"client on {self.instance}: still open") from None
        assert self.close_code is not None
        return self.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# -- part 1: one container -------------------------------------------------------------


def static_digests() -> dict[str, str]:
    return {
        p.relative_to(STATIC).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(STATIC.rglob("*"))
        if p.is_file()
    }


#: Run in the container: the same digests of the installed package's static files.
DIGEST_SCRIPT = f"""
import hashlib, json, pathlib
root = pathlib.Path({SITE_PACKAGES_STATIC!r})
print(json.dumps({{
    p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(root.rglob("*")) if p.is_file()
}}))
"""


async def one_container(d: Docker, image: str) -> None:
    print("== one container: docker run --read-only --tmpfs /tmp, port on 127.0.0.1", flush=True)
    (meta,) = json.loads(d("image", "inspect", image))
    config = meta["Config"]
    check(
        config["User"] == f"{APP_UID}:{APP_UID}",
        "image runs as a non-root user",
        f"USER {config['User']}",
    )
    check(
        set(config["ExposedPorts"]) == {f"{CONTAINER_PORT}/tcp"},
        "image exposes the service port",
        ", ".join(config["ExposedPorts"]),
    )
    test = " ".join(config["Healthcheck"]["Test"])
    check(HEALTH_PATH in test, "image has a HEALTHCHECK on /realtime/health")
    ok("image size", f"{meta['Size'] / 1e6:.0f} MB")

    admin = secrets.token_hex(16)
    jwt_secret = secrets.token_hex(32)
    name = d.start(
        "single",
        image,
        env={"REALTIME_ADMIN_TOKEN": admin, "REALTIME_JWT_SECRET": jwt_secret},
        publish=CONTAINER_PORT,
        options=("--stop-timeout", str(STOP_TIMEOUT)),
    )
    started = time.monotonic()
    port = d.published_port(name, CONTAINER_PORT)
    base = f"http://127.0.0.1:{port}"
    ws_url = f"ws://127.0.0.1:{port}/realtime/ws"
    health = wait_http(d, name, base + HEALTH_PATH)
    body = health.json()
    check(
        body["status"] == "ok",
        f"GET {HEALTH_PATH} answers 200",
        f"127.0.0.1:{port}, broker {body['broker']}, up after {time.monotonic() - started:.1f} s",
    )
    live = await asyncio.to_thread(httpx.get, base + LIVE_PATH, timeout=WAIT)
    check(live.status_code == 200, f"GET {LIVE_PATH} answers 200")

    status = d.exec(name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    cmdline = d.exec(name, "cat", "/proc/1/cmdline").stdout.replace("\0", " ").strip()
    check(
        uids is not None and set(uids.group(1).split()) == {str(APP_UID)},
        f"PID 1 runs as uid {APP_UID} (real, effective, saved, fs)",
        f"{cmdline}; Uid: {uids.group(1) if uids else '?'}",
    )
    check("football-realtime serve" in cmdline, "PID 1 is the service itself (signals reach it)")
    refused = d.exec(name, "touch", "/opt/venv/probe")
    check(
        refused.returncode != 0 and "Read-only file system" in refused.stderr,
        "the root filesystem is read-only",
        refused.stderr.strip(),
    )
    check(d.exec(name, "touch", "/tmp/probe").returncode == 0, "/tmp (tmpfs) is writable")

    client = Raw(f"{ws_url}?user_id=image-test&token={premium_token('image-test', jwt_secret)}")
    ack = await client.open({"match_ids": [9001]})
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
        denied = await http.post("/realtime/broadcast", json=score(9001, 1))
        check(denied.status_code == 401, "POST /realtime/broadcast without the token: 401")
        r = await http.post("/realtime/broadcast", json=score(9001, 1), headers=headers)
        check(r.status_code == 200, "POST /realtime/broadcast with the admin token", r.text)
    offset = r.json()["offset"]
    await client.wait_offset(offset)
    (event,) = client.events
    check(
        event["event_type"] == "match_score_changed"
        and event["data"]["match_id"] == 9001
        and event["offset"] == offset,
        "a WebSocket client subscribed to matches receives the published event",
        f"subscription {ack['subscription_id']}, offset {offset}",
    )
    await client.close()

    digests = json.loads(d.exec(name, "python", "-c", DIGEST_SCRIPT).stdout)
    check(
        digests == static_digests(),
        "the dashboard built in the image is byte for byte the committed build",
        f"{len(digests)} files",
    )
    lines = [line for line in d.logs(name).splitlines() if line.strip()]
    check(
        lines and all(json.loads(line).get("logger") for line in lines),
        "every log line is a JSON object (REALTIME_LOG_FORMAT=json)",
        f"{len(lines)} lines",
    )

    def healthy() -> str | None:
        h = d.state(name).get("Health") or {}
        if h.get("Status") == "unhealthy":
            raise CheckFailed(f"HEALTHCHECK says unhealthy: {h.get('Log')}")
        return "healthy" if h.get("Status") == "healthy" else None

    until("Docker's HEALTHCHECK to pass", healthy, timeout=45)
    ok(
        "Docker's HEALTHCHECK turns healthy",
        f"{time.monotonic() - started:.1f} s after start",
    )

    # docker stop: SIGTERM, the service drains: clients get `closing` and 1012.
    client = Raw(f"{ws_url}?user_id=image-test&token={premium_token('image-test', jwt_secret)}")
    await client.open({"match_ids": [9001]})
    t0 = time.monotonic()
    stop = asyncio.create_task(asyncio.to_thread(d, "stop", name, timeout=STOP_TIMEOUT + 15))
    code = await client.wait_closed()
    closing = [s for s in client.statuses if s.get("status") == "closing"]
    check(
        closing and closing[0].get("reconnect") is True,
        "on docker stop a connected client first gets connection_status closing (reconnect)",
    )
    check(code == RESTART_CODE, f"... then close code {RESTART_CODE} (service restart)", f"{code}")
    await stop
    took = time.monotonic() - t0
    state = d.state(name)
    check(
        state["ExitCode"] == 0 and not state["OOMKilled"] and took < STOP_TIMEOUT,
        "the process exits 0 within the stop timeout (not killed)",
        f"docker stop took {took:.1f} s of {STOP_TIMEOUT} s, exit code {state['ExitCode']}",
    )


# -- part 2: Redis, three replicas, nginx ------------------------------------------------


def nginx_conf(servers: list[str]) -> str:
    """deploy/nginx.conf with its upstream servers replaced by ``servers`` (their
    parameters kept), the rewrite tests/nginx_server.py makes."""
    conf = (DEPLOY / "nginx.conf").read_text()
    block = re.search(r"(upstream websocket \{)(.*?)(\n\})", conf, re.S)
    if block is None:
        raise CheckFailed("deploy/nginx.conf has no `upstream websocket { }` block")
    server_line = re.compile(r"^(\s*)server\s+\S+(.*;)\s*$", re.M)
    lines = server_line.findall(block.group(2))
    if not lines or "listen 80;" not in conf:
        raise CheckFailed("deploy/nginx.conf changed shape (upstream servers, `listen 80;`)")
    indent, params = lines[0]
    body = server_line.sub("", block.group(2)).rstrip()
    body += "".join(f"\n{indent}server {s}{params}" for s in servers)
    return conf[: block.start(2)] + body + conf[block.end(2) :]


def k8s_doc(filename: str, kind: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / filename).read_text()):
        if doc and doc["kind"] == kind:
            found: dict[str, Any] = doc
            return found
    raise CheckFailed(f"no {kind} in deploy/k8s/{filename}")


@contextlib.asynccontextmanager
async def followers(clients: list[RealtimeClient]) -> Any:
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def replicas_behind_nginx(d: Docker, image: str, infra: str) -> None:
    print("== Redis, three replicas and nginx (deploy/nginx.conf) on one network", flush=True)
    config = k8s_doc("configmap.yaml", "ConfigMap")["data"]
    pod = k8s_doc("deployment.yaml", "Deployment")["spec"]["template"]["spec"]
    grace = int(pod["terminationGracePeriodSeconds"])
    admin = secrets.token_hex(16)
    jwt_secret = secrets.token_hex(32)
    password = secrets.token_hex(16)
    net = d.network("net")

    # Redis exactly as deploy/k8s/redis.yaml runs it: its command, user and probe.
    sts = k8s_doc("redis.yaml", "StatefulSet")["spec"]["template"]["spec"]
    (rc,) = sts["containers"]
    user = f"{sts['securityContext']['runAsUser']}:{sts['securityContext']['runAsGroup']}"
    redis = d.start(
        "redis",
        infra,
        *rc["command"],
        *rc["args"],
        env={"REDIS_PASSWORD": password, "REDISCLI_AUTH": password},
        network=net,
        tmpfs=tuple(m["mountPath"] for m in rc["volumeMounts"]),
        options=("--user", user),
    )
    probe = rc["readinessProbe"]["exec"]["command"]
    until("redis-server to answer", lambda: d.exec(redis, *probe).stdout.strip() == "PONG")
    ok(
        "Redis runs as deploy/k8s/redis.yaml says, on the network only (no published port)",
        f"{' '.join(rc['args'])!r} as {user}; {' '.join(probe)}: PONG",
    )

    names = [f"realtime-{i}" for i in (1, 2, 3)]
    env = {
        **config,  # the ConfigMap's settings, as the Deployment loads them
        "REALTIME_ADMIN_TOKEN": admin,
        "REALTIME_JWT_SECRET": jwt_secret,
        "REALTIME_BROKER_URL": f"redis://:{password}@redis:6379/0",
    }
    ports: dict[str, int] = {}
    for n in names:
        d.start(
            n,
            image,
            env={**env, "REALTIME_INSTANCE_ID": n},
            network=net,
            publish=CONTAINER_PORT,
            options=("--stop-timeout", str(grace)),
        )
    for n in names:
        ports[n] = d.published_port(d.name(n), CONTAINER_PORT)
        wait_http(d, d.name(n), f"http://127.0.0.1:{ports[n]}{HEALTH_PATH}")
    ok(
        "three replicas answer /realtime/health with the Redis broker and the ConfigMap's settings",
        ", ".join(f"{n} on 127.0.0.1:{p}" for n, p in ports.items()),
    )

    conf_path = (d.logdir / "nginx-realtime.conf").resolve()
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(nginx_conf([f"{n}:{CONTAINER_PORT}" for n in names]))
    nginx = d.start(
        "nginx",
        infra,
        *("nginx", "-g", "daemon off;"),
        network=net,
        publish=80,
        read_only=False,
        tmpfs=(),
        options=("-v", f"{conf_path}:/etc/nginx/conf.d/realtime.conf:ro"),
    )
    nginx_port = d.published_port(nginx, 80)
    front = f"http://127.0.0.1:{nginx_port}"
    wait_http(d, nginx, front + HEALTH_PATH)

    def three_registered() -> int | None:
        r = httpx.get(front + "/realtime/stats", timeout=WAIT)
        count = r.json().get("cluster", {}).get("instance_count")
        return count if r.status_code == 200 and count == 3 else None

    until("three instances in the cluster registry", three_registered)
    ok("through nginx: /realtime/stats sees 3 instances", f"nginx on 127.0.0.1:{nginx_port}")
    hidden = await asyncio.to_thread(httpx.get, front + "/metrics", timeout=WAIT)
    check(hidden.status_code == 404, "through nginx: /metrics is not exposed (404)")

    headers = {"Authorization": f"Bearer {admin}"}
    ws_front = f"ws://127.0.0.1:{nginx_port}/realtime/ws"

    def url(user: str) -> str:
        return f"{ws_front}?user_id={user}&token={premium_token(user, jwt_secret)}"

    # Cross-instance delivery: one client per replica, an event published on each replica.
    raws = [Raw(url(f"fan{k}")) for k in range(3)]
    for r in raws:
        await r.open({"match_ids": [9100]})
    landed = {r.instance: r for r in raws}
    check(
        set(landed) == set(names),
        "clients connected through nginx land on all three replicas (least_conn)",
        ", ".join(sorted(landed)),
    )
    async with httpx.AsyncClient(timeout=WAIT, headers=headers) as http:
        for k, n in enumerate(names):
            p = await http.post(
                f"http://127.0.0.1:{ports[n]}/realtime/broadcast", json=score(9100, k)
            )
            if p.status_code != 200:
                raise CheckFailed(f"publish on {n}: {p.status_code} {p.text}")
            offset = p.json()["offset"]
            for r in raws:
                await r.wait_offset(offset)
            others = sorted(r.instance for r in raws if r.instance != n)
            ok(f"event published on {n} reaches the clients on {' and '.join(others)} too")

    # Failover: Python clients with recovery; one replica killed, another drained,
    # events published on the third all along.
    pys = [
        RealtimeClient(url(f"py{k}"), min_reconnect_delay=0.1, max_reconnect_delay=1.0, max_queue=0)
        for k in range(3)
    ]
    got: list[list[int]] = [[] for _ in pys]  # offsets received, per client
    where: list[list[str]] = [[] for _ in pys]  # instances connected to, per client
    failed: list[RecoveryFailed] = []

    def follow(k: int, client: RealtimeClient) -> None:
        def on_event(ev: Any) -> None:
            got[k].append(ev.offset)

        def on_status(ev: Any) -> None:
            if ev.raw["data"].get("status") == "connected":
                where[k].append(str(ev.raw["data"].get("instance_id")))

        client.on("match_score_changed", on_event)
        client.on("connection_status", on_status)
        client.on("recovery_failed", failed.append)

    async with followers(pys):
        for k, c in enumerate(pys):
            follow(k, c)
            await c.connect()
            await c.subscribe("matches", match_ids=[9200])
        first = [str(c.connection_info.get("instance_id")) for c in pys]
        victim = first[0]
        others = [n for n in names if n != victim]
        drained = next((n for n in others if n in first), others[0])
        survivor = next(n for n in others if n != drained)
        ok(
            "Python clients (RealtimeClient) connected through nginx",
            ", ".join(f"py{k} on {i}" for k, i in enumerate(first)),
        )

        published: list[int] = []
        total = 90

        async def publish() -> None:
            async with httpx.AsyncClient(timeout=WAIT, headers=headers) as http:
                for i in range(total):
                    p = await http.post(
                        f"http://127.0.0.1:{ports[survivor]}/realtime/broadcast",
                        json=score(9200, i),
                    )
                    if p.status_code != 200:
                        raise CheckFailed(f"publish on {survivor}: {p.status_code} {p.text}")
                    published.append(p.json()["offset"])
                    await asyncio.sleep(0.02)  # paced: the failover happens mid-stream

        publisher = asyncio.create_task(publish())

        async def published_count(n: int) -> None:
            async with asyncio.timeout(WAIT):
                while len(published) < n and not publisher.done():  # noqa: ASYNC110
                    await asyncio.sleep(POLL)

        ok(f"publishing {total} events on {survivor}, paced")
        await published_count(total // 3)
        d("kill", d.name(victim))
        code = await landed[victim].wait_closed()
        ok(
            f"docker kill {victim} after {len(published)} events",
            f"its raw client's connection dropped: {code}",
        )
        await published_count(2 * total // 3)
        t_stop = time.monotonic()
        await asyncio.to_thread(d, "stop", d.name(drained), timeout=grace + 15)
        state = d.state(d.name(drained))
        check(
            state["ExitCode"] == 0,
            f"docker stop {drained} after {len(published)} events: drained, exit code 0",
            f"{time.monotonic() - t_stop:.1f} s",
        )
        code = await landed[drained].wait_closed()
        check(
            code == RESTART_CODE,
            f"through nginx the raw client on {drained} got close code {RESTART_CODE}",
            f"{code}",
        )
        await publisher
        last = published[-1]

        async def everything_arrived() -> None:
            async with asyncio.timeout(WAIT):
                while any(not g or g[-1] < last for g in got):  # noqa: ASYNC110
                    await asyncio.sleep(POLL)

        try:
            await everything_arrived()
        except TimeoutError:
            raise CheckFailed(
                "not every client got every event: "
                + "; ".join(f"py{k}: {len(g)} of {len(published)}" for k, g in enumerate(got))
            ) from None
        for k, c in enumerate(pys):
            moved = where[k][0] in (victim, drained)
            stats = c.stats
            check(
                got[k] == published,
                f"py{k} received all {len(published)} events exactly once, in order",
                f"{' -> '.join(where[k])}; reconnects {stats.reconnects}, "
                f"recoveries {stats.recoveries}, duplicates dropped {stats.duplicates_dropped}",
            )
            if moved:
                check(
                    where[k][-1] == survivor and stats.recoveries >= 1,
                    f"py{k} lost {where[k][0]}, reconnected through nginx to {survivor} "
                    "and recovered with `since`",
                )
        check(not failed, "no client was told that recovery failed")
    for r in raws:
        await r.close()


# -- main ------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    d = Docker(args.docker, args.run_id, Path(args.logs))
    try:
        t0 = time.monotonic()
        await one_container(d, args.image)
        t1 = time.monotonic()
        print(f"   (one container: {t1 - t0:.0f} s)", flush=True)
        await replicas_behind_nginx(d, args.image, args.infra)
        print(f"   (three replicas behind nginx: {time.monotonic() - t1:.0f} s)", flush=True)
    finally:
        with contextlib.suppress(Exception):
            d.save_logs()
        d.remove_all()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docker", default="docker")
    p.add_argument("--image", default=image_tag())
    p.add_argument("--infra", default="football-realtime-base/infra:bookworm")
    p.add_argument("--run-id", default=secrets.token_hex(4))
    p.add_argument("--logs", default=str(ROOT / "artifacts" / "image-test"))
    p.add_argument("--print-image", action="store_true", help="print the image tag and exit")
    args = p.parse_args(argv)
    if args.print_image:
        print(image_tag())
        return 0
    try:
        asyncio.run(main_async(args))
    except CheckFailed as e:
        print(f"FAIL  {e}\n(container logs: {args.logs})", flush=True)
        return 1
    print("container checks: all passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
