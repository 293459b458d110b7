"""A fault soak: a Redis topology, 3 instances, recovering Python clients, a retrying
publisher, and faults injected one after another; then the account of every event.

    .venv/bin/python bench/soak.py --minutes 3 --broker sentinel --min-replicas 1
    .venv/bin/python bench/soak.py --smoke --broker single        # 30 s, each fault once

What it starts (every process on free loopback ports, in its own temp dir; never 6379):

* the broker: ``single`` (one ``redis-server``, no persistence), ``sentinel`` (1 master,
  2 replicas, 3 sentinels: tests/redis_sentinel.py) or ``cluster`` (3 masters with 2
  replicas each: tests/redis_cluster.py);
* 3 instances (``python -m football_realtime serve``) on that broker, with
  ``REALTIME_REDIS_MIN_REPLICAS`` from ``--min-replicas``;
* a round-robin TCP proxy in front of them (tests/tcp_proxy.py, in this process): each
  new connection goes to the next instance that accepts, so a client dropped by one
  instance reconnects to another, and the proxy can cut client connections abruptly;
* ``--clients`` RealtimeClients (default options: backoff, heartbeats) through the
  proxy, each subscribed to ``matches`` (a third to every match, the others to 5 of 10);
* a publisher: ``POST /realtime/broadcast`` at ``--rate`` events/s, one at a time, each
  with an ``Idempotency-Key``, retried on another instance (same key) until
  acknowledged or 30 s passed.

Faults, in turn, ``--rounds`` times each (2 by default, 1 with ``--smoke``), spread over
the run; before each one every client is back (state ``open``) or 30 s passed:

* ``instance_kill``: SIGKILL an instance, start it again on its port;
* ``instance_term``: SIGTERM (graceful drain, 1012 to its clients), start it again;
* ``redis``: single: SIGKILL redis-server and start it again, empty (a new epoch);
  sentinel: SIGKILL the master, wait for the failover, restart the old master as a
  replica of the new one; cluster: SIGKILL the master of the ``{frt:matches}`` slot,
  wait for its replica's promotion, restart the old node (it rejoins as a replica);
* ``client_abort``: the proxy aborts a third of the client connections (no close frame);
* opt-in (``--faults``): ``instance_freeze``, SIGSTOP an instance for ``--freeze-seconds``
  (20) and SIGCONT it: its clients must notice the silence (heartbeat watchdog) and move.

The account, per fault kind (an event, a notice or a reconnect belongs to the fault
most recently injected before it; ``none`` before the first) and in total:

* published (events tried), acknowledged (HTTP 200), delivered (events the
  applications received);
* lost: acknowledged, matching a client's subscription, never delivered to it, and not
  covered by a ``recovered: false`` notice (``RecoveryFailed``) delivered between the
  client's neighbouring receipts; explained: such misses that a notice covers;
* duplicated (an event delivered twice to one client), out of order (an event delivered
  after a later one: the publisher is sequential, so stream order is publish order);
* ``recovered: false`` notices; reconnect-to-recovered: from a client's state leaving
  ``open`` to ``open`` again (resubscribed, replay released), p50, p99, max;
* for each Redis fault, how long after the kill publishing resumed (the first
  acknowledgement after the last failed attempt).

It exits 1 when an acknowledged event was lost, duplicated or reordered, when an
instance logged a traceback, or when a client did not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
from tests.redis_cluster import RedisClusterSet  # noqa: E402
from tests.redis_cluster import _client as cluster_client  # noqa: E402
from tests.redis_sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelSet, poll  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.support import ADMIN, JWT_SECRET, free_port, token  # noqa: E402
from tests.tcp_proxy import Proxy  # noqa: E402

from football_realtime.client import RealtimeClient, RecoveryFailed  # noqa: E402
from football_realtime.client.models import ClientState, Event  # noqa: E402


class Closes(logging.Handler):
    """Why client connections ended, from the client's log (time, what)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("connection closed ("):
            self.seen.append((now(), "close " + msg.split("(", 1)[1].split(" ", 1)[0]))
        elif msg.startswith("dropping the connection"):
            self.seen.append((now(), "dropped: " + msg.split(": ", 1)[1][:40]))
        elif "connection attempt" in msg and "failed" in msg:
            self.seen.append((now(), "attempt failed"))


CLOSES = Closes()

FAULTS = ("instance_kill", "instance_term", "redis", "client_abort")
#: Opt-in (``--faults``): SIGSTOP an instance for ``--freeze-seconds``, then SIGCONT.
EXTRA_FAULTS = ("instance_freeze",)
STREAM_KEY = "{frt:matches}:meta"
MATCHES = 10
GIVE_UP_S = 30.0


def now() -> float:
    return time.monotonic()


# -- the broker topologies ---------------------------------------------------------


class Topology:
    name = ""
    promise = ""

    def url(self) -> str:
        raise NotImplementedError

    def redis_fault(self) -> str:
        """Inject the Redis fault and return once the topology is whole again; a note."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        """The Redis and Sentinel logs (copied next to the instances' logs at the end)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Single(Topology):
    name = "single"

    def __init__(self) -> None:
        self.server = RedisServer().start()

    def url(self) -> str:
        return self.server.url

    def redis_fault(self) -> str:
        proc = self.server.proc
        assert proc is not None
        proc.kill()
        proc.wait(10)
        self.server.proc = None
        self.server.start()
        return f"redis-server :{self.server.port} SIGKILLed and started again, empty"

    def describe(self) -> str:
        return "one redis-server, no persistence (a restart loses every stream: new epochs)"

    def log_files(self) -> list[Path]:
        return [self.server.dir / "redis.log"]

    def close(self) -> None:
        self.server.close()


class Sentinel(Topology):
    name = "sentinel"

    def __init__(self) -> None:
        self.set = SentinelSet(replicas=2, sentinels=3).start()

    def url(self) -> str:
        return self.set.url()

    def redis_fault(self) -> str:
        s = self.set
        old = s.kill_master()
        t0 = now()
        new = s.wait_new_master(old, timeout=60)
        promoted = now() - t0
        node = s.node(old)
        node.args = [
            "--repl-diskless-sync-delay",
            "0",
            "--protected-mode",
            "no",
            "--replicaof",
            "127.0.0.1",
            str(new),
        ]
        node.start()
        s.replicas = [n for n in s.nodes if n.port != new and n.proc is not None]
        poll(lambda: s._replicas_online(2), "the old master back as a replica", 60)
        return f"master :{old} SIGKILLed, :{new} promoted after {promoted:.1f} s, :{old} back"

    def describe(self) -> str:
        return (
            f"1 master, 2 replicas, 3 sentinels (quorum 2, down-after-milliseconds "
            f"{DOWN_AFTER_MS}, failover-timeout {FAILOVER_TIMEOUT_MS})"
        )

    def log_files(self) -> list[Path]:
        return [*self.set.dir.glob("*.log"), *(n.dir / "redis.log" for n in self.set.nodes)]

    def close(self) -> None:
        self.set.close()


class Cluster(Topology):
    name = "cluster"

    def __init__(self) -> None:
        self.set = RedisClusterSet(masters=3, replicas=2).start()

    def url(self) -> str:
        return self.set.url()

    def redis_fault(self) -> str:
        c = self.set
        old = c.master_of(STREAM_KEY)
        c.kill_master(old)
        t0 = now()
        new = c.wait_promoted(old, STREAM_KEY, timeout=60)
        promoted = now() - t0
        node = c.node(old)
        node.start()  # same args: same node id (nodes.conf) and bus port; rejoins as replica
        c.killed.remove(node)

        def rejoined() -> bool:
            info = cluster_client(new).info("replication")
            links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return sum(1 for v in links if v.get("state") == "online") >= c.replicas

        poll(rejoined, "the old master back as a replica", 60)
        return f"master :{old} SIGKILLed, :{new} promoted after {promoted:.1f} s, :{old} back"

    def describe(self) -> str:
        from tests.redis_cluster import NODE_TIMEOUT_MS

        return f"3 masters with 2 replicas each (cluster-node-timeout {NODE_TIMEOUT_MS})"

    def log_files(self) -> list[Path]:
        return [n.dir / "redis.log" for n in self.set.nodes]

    def close(self) -> None:
        self.set.close()


TOPOLOGIES: dict[str, Callable[[], Topology]] = {
    "single": Single,
    "sentinel": Sentinel,
    "cluster": Cluster,
}


# -- instances -----------------------------------------------------------------------


@dataclass
class Instance:
    name: str
    port: int
    env: dict[str, str]
    logdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = (self.logdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "football_realtime", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = now() + timeout
        while now() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.http}/realtime/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not healthy within {timeout} s")

    def signal(self, sig: int, timeout: float = 30.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self) -> str:
        path = self.logdir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


# -- the publisher -------------------------------------------------------------------


@dataclass
class Published:
    seq: int
    match_id: int
    first_try: float
    acked_at: float | None = None
    stream: str | None = None
    epoch: str | None = None
    offset: int | None = None
    tries: int = 0
    duplicate_ack: bool = False


@dataclass
class Publisher:
    instances: list[Instance]
    rate: float
    run_id: str
    events: list[Published] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)  # times of failed attempts
    stopping: bool = False

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            start = now()
            seq = 0
            while not self.stopping:
                due = start + seq / self.rate
                if due > now():
                    await asyncio.sleep(due - now())
                seq += 1
                await self._publish(http, seq)

    async def _publish(self, http: httpx.AsyncClient, seq: int) -> None:
        match_id = 1 + seq % MATCHES
        ev = Published(seq, match_id, now())
        self.events.append(ev)
        body = {
            "event_type": "match_score_changed",
            "data": {
                "match_id": match_id,
                "home_score": seq % 10,
                "away_score": 0,
                "minute": seq % 90,
                "league": "英超",
                "soak_seq": seq,
            },
            "source": "soak",
        }
        headers = {"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": f"{self.run_id}-{seq}"}
        delay = 0.05
        k = seq
        while now() - ev.first_try < GIVE_UP_S:
            inst = self.instances[k % len(self.instances)]
            k += 1
            ev.tries += 1
            try:
                r = await http.post(f"{inst.http}/realtime/broadcast", json=body, headers=headers)
                if r.status_code == 200:
                    ack = r.json()
                    ev.acked_at = now()
                    ev.stream, ev.epoch, ev.offset = ack["stream"], ack["epoch"], ack["offset"]
                    ev.duplicate_ack = bool(ack.get("duplicate"))
                    return
                if r.status_code < 500:
                    raise RuntimeError(f"publish refused: {r.status_code} {r.text[:300]}")
            except httpx.HTTPError:
                pass
            self.failures.append(now())
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(0.5, delay * 2)


# -- the clients ---------------------------------------------------------------------


@dataclass
class SoakClient:
    index: int
    match_ids: frozenset[int] | None  # None: every match
    log: list[tuple[float, str, int]] = field(default_factory=list)  # (t, "ev"|"rf", seq)
    #: Per log entry: the instance the client was on, and (notices) the reason.
    where: list[str] = field(default_factory=list)
    states: list[tuple[float, ClientState]] = field(default_factory=list)
    client: RealtimeClient | None = None
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None

    def instance_id(self) -> str | None:
        if self.client is None:
            return None
        got = self.client.connection_info.get("instance_id")
        return got if isinstance(got, str) else None

    def wants(self, match_id: int) -> bool:
        return self.match_ids is None or match_id in self.match_ids

    @property
    def state(self) -> ClientState | None:
        return self.states[-1][1] if self.states else None

    async def start(self, url: str) -> None:
        user = f"soak-{self.index}"
        client = RealtimeClient(url, user_id=user, token=token(user))
        self.client = client

        def on_state(state: ClientState) -> None:
            self.states.append((now(), state))

        client.on("client_state", on_state)
        await client.connect()
        ids = None if self.match_ids is None else sorted(self.match_ids)
        await client.subscribe("matches", match_ids=ids)
        self.task = asyncio.create_task(self._consume(client))

    async def _consume(self, client: RealtimeClient) -> None:
        try:
            async for item in client:
                if isinstance(item, RecoveryFailed):
                    self.log.append((now(), "rf", 0))
                    self.where.append(f"{self.instance_id()} {item.reason[:90]}")
                elif isinstance(item, Event) and item.stream == "matches":
                    seq = item.raw.get("data", {}).get("soak_seq")
                    if isinstance(seq, int):
                        self.log.append((now(), "ev", seq))
                        self.where.append(f"{self.instance_id()} offset {item.offset}")
        except Exception as exc:  # the client stopped: a finding
            self.error = exc

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)


def subscription(i: int) -> frozenset[int] | None:
    if i % 3 == 0:
        return None
    return frozenset(1 + (i + 2 * k) % MATCHES for k in range(5))


# -- the run -------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float
    note: str = ""
    took: float = 0.0
    #: instance_freeze: seconds from the freeze until each of its clients was open elsewhere
    moved: list[float] = field(default_factory=list)


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{pct(values, 0.5):.1f} (p50) / {max(values):.1f} (max)"


@dataclass
class Soak:
    args: argparse.Namespace
    topology: Topology
    instances: list[Instance]
    proxy: Proxy
    publisher: Publisher
    clients: list[SoakClient]
    faults: list[Fault] = field(default_factory=list)
    started: float = field(default_factory=now)

    def all_open(self) -> bool:
        return all(c.state is ClientState.OPEN for c in self.clients)

    async def wait_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = now() + timeout
        while now() < deadline:
            if cond():
                return True
            await asyncio.sleep(0.05)
        return cond()

    async def wait_moved(self, behind: list[SoakClient], frozen: str, limit: float) -> list[float]:
        """Wait ``limit`` seconds; when each client in ``behind`` was open elsewhere."""
        moved: dict[int, float] = {}
        deadline = now() + limit
        while now() < deadline:
            for c in behind:
                if c.index not in moved and c.state is ClientState.OPEN:
                    where = c.instance_id()
                    if where is not None and where != frozen:
                        moved[c.index] = now()
            await asyncio.sleep(0.05)
        return sorted(moved.values())

    async def inject(self, kind: str, n: int) -> Fault:
        fault = Fault(kind, now())
        self.faults.append(fault)
        inst = self.instances[n % len(self.instances)]
        if kind == "instance_kill":
            await asyncio.to_thread(inst.signal, signal.SIGKILL)
            inst.start()
            await asyncio.to_thread(inst.wait_healthy)
            fault.note = f"{inst.name} SIGKILLed, started again"
        elif kind == "instance_term":
            await asyncio.to_thread(inst.signal, signal.SIGTERM)
            inst.start()
            await asyncio.to_thread(inst.wait_healthy)
            fault.note = f"{inst.name} SIGTERMed (drained), started again"
        elif kind == "redis":
            fault.note = await asyncio.to_thread(self.topology.redis_fault)
        elif kind == "instance_freeze":
            assert inst.proc is not None
            behind = [c for c in self.clients if c.instance_id() == inst.name]
            os.kill(inst.proc.pid, signal.SIGSTOP)
            try:
                moved = await self.wait_moved(behind, inst.name, self.args.freeze_seconds)
            finally:
                os.kill(inst.proc.pid, signal.SIGCONT)
            fault.moved = [t - fault.at for t in moved]
            fault.note = (
                f"{inst.name} frozen (SIGSTOP) for {self.args.freeze_seconds:g} s; "
                f"{len(moved)} of its {len(behind)} clients open on another instance "
                f"after {_spread(fault.moved)} s"
            )
        elif kind == "client_abort":
            k = self.proxy.abort(max(1, len(self.clients) // 3))
            fault.note = f"{k} client connections aborted"
        fault.took = now() - fault.at
        return fault

    async def run(self) -> None:
        args = self.args
        total = args.seconds
        rounds = args.rounds
        plan = [kind for _ in range(rounds) for kind in args.faults]
        spacing = total / (len(plan) + 1)
        pub_task = asyncio.create_task(self.publisher.run())
        t0 = self.started = now()
        try:
            for i, kind in enumerate(plan):
                due = t0 + spacing * (i + 1)
                await asyncio.sleep(max(0.0, due - now()))
                if not await self.wait_until(self.all_open, 30):
                    print(f"  ! not every client open before fault {i + 1}", flush=True)
                fault = await self.inject(kind, i // len(args.faults) + i)
                print(
                    f"  [{now() - t0:6.1f} s] {kind}: {fault.note} ({fault.took:.1f} s)",
                    flush=True,
                )
            await asyncio.sleep(max(0.0, t0 + total - now()))
        finally:
            self.publisher.stopping = True
            await pub_task
        await self.wait_until(self.caught_up, 30)

    def caught_up(self) -> bool:
        acked = [e for e in self.publisher.events if e.acked_at is not None]
        if not self.all_open():
            return False
        for c in self.clients:
            mine = [e.seq for e in acked if c.wants(e.match_id)]
            if mine and not any(kind == "ev" and s == mine[-1] for _, kind, s in c.log[-50:]):
                return False
        return True


# -- the account ---------------------------------------------------------------------


@dataclass
class Row:
    published: int = 0
    acknowledged: int = 0
    delivered: int = 0
    lost: int = 0
    explained: int = 0
    duplicated: int = 0
    reordered: int = 0
    recovery_failed: int = 0
    recover_s: list[float] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def account(soak: Soak) -> tuple[dict[str, Row], list[str]]:
    fault_times = [(f.at, f.kind) for f in soak.faults]

    def kind_at(t: float) -> str:
        kind = "none"
        for at, k in fault_times:
            if at <= t:
                kind = k
        return kind

    rows: dict[str, Row] = defaultdict(Row)
    events = {e.seq: e for e in soak.publisher.events}
    findings: list[str] = []
    for e in events.values():
        r = rows[kind_at(e.first_try)]
        r.published += 1
        r.acknowledged += e.acked_at is not None
    t_start = soak.started
    for c in soak.clients:
        gaps_told: set[int] = set()
        received: dict[int, int] = {}  # seq -> index in log
        top = 0
        for i, (t, kind, seq) in enumerate(c.log):
            if kind == "rf":
                rows[kind_at(t)].recovery_failed += 1
                continue
            pub = events.get(seq)
            r = rows[kind_at(pub.first_try if pub else t)]
            r.delivered += 1
            if seq in received:
                r.duplicated += 1
                findings.append(f"client {c.index}: seq {seq} delivered twice")
                continue
            received[seq] = i
            if seq < top:
                r.reordered += 1
                findings.append(f"client {c.index}: seq {seq} after {top}")
            top = max(top, seq)
        rf_at = [i for i, (_, kind, _) in enumerate(c.log) if kind == "rf"]
        got = sorted(received)
        for e in events.values():
            if e.acked_at is None or not c.wants(e.match_id) or e.seq in received:
                continue
            # The receipts around the missing event, and a notice between them?
            j = bisect.bisect_left(got, e.seq)
            lo = received[got[j - 1]] if j > 0 else -1
            hi = received[got[j]] if j < len(got) else len(c.log)
            r = rows[kind_at(e.first_try)]
            if any(lo < i < hi for i in rf_at):
                r.explained += 1
            else:
                r.lost += 1
                findings.append(
                    f"client {c.index}: seq {e.seq} (offset {e.offset}, epoch {e.epoch}) lost"
                )
                if r.lost <= 3 or lo not in gaps_told:  # what the client saw around it
                    gaps_told.add(lo)
                    for k in range(max(0, lo - 2), min(len(c.log), hi + 3)):
                        t, what, s = c.log[k]
                        findings.append(
                            f"    [{t - t_start:7.2f} s] {what} {s or ''} ({c.where[k]})"
                        )
                    findings.extend(
                        f"    [{t - t_start:7.2f} s] state {st}"
                        for t, st in c.states
                        if c.log[max(0, lo)][0] - 5 <= t <= (c.log[min(hi, len(c.log) - 1)][0] + 1)
                    )
        down: float | None = None
        opened = [i for i, (_, st) in enumerate(c.states) if st is ClientState.OPEN]
        for t, state in c.states[opened[0] if opened else len(c.states) :]:
            if state is ClientState.OPEN:
                if down is not None:
                    rows[kind_at(down)].recover_s.append(t - down)
                down = None
            elif down is None:
                down = t
        if down is not None:
            findings.append(f"client {c.index} not open at the end ({c.state})")
        if c.error is not None:
            findings.append(f"client {c.index} stopped: {c.error!r}")
    return rows, findings


def table(rows: dict[str, Row]) -> str:
    head = (
        "| fault | published | acknowledged | delivered | lost | explained | duplicated "
        "| out of order | `recovered: false` | reconnects | recovered p50 / p99 / max (s) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    total = Row()
    lines = []
    for kind in ("none", *FAULTS, *EXTRA_FAULTS):
        if kind not in rows:
            continue
        r = rows[kind]
        lines.append(_line(kind, r))
        for name in (
            "published",
            "acknowledged",
            "delivered",
            "lost",
            "explained",
            "duplicated",
            "reordered",
            "recovery_failed",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.recover_s += r.recover_s
    lines.append(_line("**total**", total))
    return head + "\n".join(lines)


def _line(name: str, r: Row) -> str:
    rec = r.recover_s
    times = f"{pct(rec, 0.5):.2f} / {pct(rec, 0.99):.2f} / {max(rec):.2f}" if rec else "-"
    return (
        f"| {name} | {r.published} | {r.acknowledged} | {r.delivered} | {r.lost} "
        f"| {r.explained} | {r.duplicated} | {r.reordered} | {r.recovery_failed} "
        f"| {len(rec)} | {times} |"
    )


def publish_resumed(soak: Soak) -> list[str]:
    """For each Redis fault: seconds from the kill to the first acknowledgement after
    the last failed attempt before the next fault."""
    out = []
    faults = soak.faults
    for i, f in enumerate(faults):
        if f.kind != "redis":
            continue
        end = faults[i + 1].at if i + 1 < len(faults) else float("inf")
        fails = [t for t in soak.publisher.failures if f.at <= t < end]
        last = max(fails, default=f.at)
        acks = [
            e.acked_at for e in soak.publisher.events if e.acked_at and last <= e.acked_at < end
        ]
        if fails and acks:
            out.append(f"{min(acks) - f.at:.1f} s ({len(fails)} failed attempts)")
        else:
            out.append("no interruption")
    return out


def versions() -> str:
    def ver(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    from football_realtime import __version__

    redis_v = next(
        (w[2:] for w in ver(["redis-server", "--version"]).split() if w.startswith("v=")), "?"
    )
    return (
        f"football-realtime {__version__}, Python {platform.python_version()}, "
        f"Redis {redis_v}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} cores"
    )


# -- main ----------------------------------------------------------------------------


async def soak_main(args: argparse.Namespace) -> int:
    client_log = logging.getLogger("football_realtime.client")
    client_log.setLevel(logging.INFO)
    client_log.addHandler(CLOSES)
    client_log.propagate = False
    print(f"soak: broker {args.broker}, min replicas {args.min_replicas}, {args.seconds:.0f} s")
    topology = await asyncio.to_thread(TOPOLOGIES[args.broker])
    logdir = Path(tempfile.mkdtemp(prefix="frt-soak-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "REALTIME_BROKER_URL": topology.url(),
        "REALTIME_REDIS_MIN_REPLICAS": str(args.min_replicas),
        "REALTIME_ADMIN_TOKEN": ADMIN,
        "REALTIME_JWT_SECRET": JWT_SECRET,
        "REALTIME_LOG_LEVEL": "warning",
        "REALTIME_ACCESS_LOG": "false",
    }
    instances = [
        Instance(f"i{k}", free_port(), {**env, "REALTIME_INSTANCE_ID": f"i{k}"}, logdir)
        for k in range(3)
    ]
    proxy = Proxy([i.port for i in instances])
    clients = [SoakClient(i, subscription(i)) for i in range(args.clients)]
    publisher = Publisher(instances, args.rate, f"soak-{os.getpid()}-{int(time.time())}")
    soak = Soak(args, topology, instances, proxy, publisher, clients)
    try:
        for inst in instances:
            inst.start()
        for inst in instances:
            await asyncio.to_thread(inst.wait_healthy)
        await proxy.start()
        url = f"ws://127.0.0.1:{proxy.port}/realtime/ws"
        await asyncio.gather(*(c.start(url) for c in clients))
        print(f"  {len(clients)} clients open; publishing at {args.rate}/s; logs in {logdir}")
        await soak.run()
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await proxy.close()
        for inst in instances:
            await asyncio.to_thread(inst.signal, signal.SIGTERM)
        for k, path in enumerate(topology.log_files()):
            if path.exists():
                shutil.copy(path, logdir / f"redis-{k}-{path.parent.name}-{path.name}")
        await asyncio.to_thread(topology.close)
    rows, findings = account(soak)
    why: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t, what in CLOSES.seen:
        kind = "none"
        for f in soak.faults:
            if f.at <= t:
                kind = f.kind
        why[kind][what] += 1
    tracebacks = sum(i.log().count("Traceback") for i in instances)
    resumed = publish_resumed(soak)
    cmd = "python bench/soak.py " + " ".join(sys.argv[1:])
    report = [
        f"`{cmd}`: {topology.describe()}; 3 instances, {len(clients)} clients, "
        f"{args.rate:g} events/s, REALTIME_REDIS_MIN_REPLICAS={args.min_replicas}",
        "",
        table(rows),
        "",
        f"Publishing resumed after each Redis fault: {', '.join(resumed) or '-'}. "
        f"Publisher attempts that failed: {len(publisher.failures)}; acknowledged as "
        f"duplicates of an earlier attempt: {sum(e.duplicate_ack for e in publisher.events)}. "
        f"Tracebacks in instance logs: {tracebacks}.",
        "",
        f"Versions: {versions()}.",
        "",
        "Why client connections ended: "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{w} x{n}" for w, n in sorted(ws.items()))
            for kind, ws in why.items()
        ),
    ]
    print("\n" + "\n".join(report))
    if args.json:
        text = json.dumps(
            {
                "command": cmd,
                "report": report,
                "faults": [f.__dict__ for f in soak.faults],
                "findings": findings[:5000],
            },
            indent=1,
        )
        await asyncio.to_thread(Path(args.json).write_text, text)
    bad = findings  # every finding breaks a target: unexplained loss, duplicate, reorder
    if findings:
        print(f"\n{len(findings)} findings:")
        for finding in findings[:200]:
            print("  " + finding)
    for f in soak.faults:
        print(f"  fault {f.kind}: {f.note} ({f.took:.1f} s)")
    return 1 if bad or tracebacks else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--broker", choices=sorted(TOPOLOGIES), default="single")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seconds", type=float, help="run length in seconds (overrides --minutes)")
    p.add_argument("--smoke", action="store_true", help="30 s, each fault once")
    p.add_argument("--rounds", type=int, help="times each fault is injected (default 2)")
    p.add_argument("--min-replicas", type=int, default=0)
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--rate", type=float, default=40.0, help="events published per second")
    p.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, injected in this order each round (default {','.join(FAULTS)}; "
        f"also: {','.join(EXTRA_FAULTS)})",
    )
    p.add_argument("--freeze-seconds", type=float, default=20.0)
    p.add_argument("--json", help="also write the report and findings to this file")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 30.0 if args.smoke else args.minutes * 60
    if args.rounds is None:
        args.rounds = 1 if args.smoke else 2
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - {*FAULTS, *EXTRA_FAULTS}
    if unknown:
        p.error(f"unknown faults: {sorted(unknown)}")
    if args.broker == "single" and args.min_replicas:
        p.error("single Redis has no replica: --min-replicas must be 0")
    return asyncio.run(soak_main(args))


if __name__ == "__main__":
    sys.exit(main())
