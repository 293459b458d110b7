"""A real Redis Sentinel set for tests: 1 master, 2 replicas, 3 sentinels.

Every process listens on its own free loopback port (never 6379) and keeps its files
(sentinel configs, which sentinels rewrite, and logs) in the set's own temp dir.
Sentinels use ``down-after-milliseconds`` 1000 and ``failover-timeout`` 5000, so a
killed master is replaced within a few seconds. Readiness and failover are waited for
by polling conditions with timeouts, never by fixed sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from .redis_server import REDIS_SERVER, RedisServer
from .support import TIMEOUT, free_port

MASTER_NAME = "frt"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def poll(cond: Callable[[], Any], what: str, timeout: float = TIMEOUT * 3) -> Any:
    """Poll ``cond`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = cond()
            if got:
                return got
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s (last error: {last!r})")


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0, socket_connect_timeout=1.0)


class SentinelSet:
    def __init__(self, replicas: int = 2, sentinels: int = 3) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="frt-sentinel-"))
        # Replication starts at once (no diskless-sync delay) for quick (re)syncs.
        fast = ["--repl-diskless-sync-delay", "0", "--protected-mode", "no"]
        self.master = RedisServer(args=fast)
        self.replicas = [
            RedisServer(args=[*fast, "--replicaof", "127.0.0.1", str(self.master.port)])
            for _ in range(replicas)
        ]
        self.nodes = [self.master, *self.replicas]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []
        self.killed_at: float | None = None
        self._stopped: list[int] = []

    # -- addresses ---------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/{db}"

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def master_port(self) -> int:
        """The master the sentinels name (a majority agreeing)."""
        ports = []
        for p in self.sentinel_ports:
            try:
                addr = _client(p).sentinel_get_master_addr_by_name(MASTER_NAME)
            except (redis.RedisError, OSError):
                continue
            if addr:
                ports.append(int(addr[1]))
        best = max(set(ports), key=ports.count) if ports else 0
        return best if ports.count(best) * 2 > len(self.sentinel_ports) else 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> SentinelSet:
        for n in self.nodes:
            n.start()
        poll(self._replicas_online, "replicas in sync")
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {self.dir}\n"
                f"logfile {self.dir / f'sentinel-{i}.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 2\n"
            )
            self.sentinel_procs.append(
                subprocess.Popen(
                    [str(REDIS_SERVER), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        poll(self._sentinels_ready, "sentinels seeing the master, 2 replicas, each other")
        return self

    def _replicas_online(self, want: int | None = None) -> bool:
        """``want`` replicas (default: all) in sync with the master."""
        info = _client(self.master.port).info("replication")
        links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        online = [v for v in links if v.get("state") == "online"]
        return len(online) >= (len(self.replicas) if want is None else want)

    def _sentinels_ready(self) -> bool:
        for p in self.sentinel_ports:
            m = _client(p).sentinel_master(MASTER_NAME)
            if (
                int(m["port"]) != self.master.port
                or int(m["num-slaves"]) != len(self.replicas)
                or int(m["num-other-sentinels"]) != len(self.sentinel_ports) - 1
                or m["flags"] != "master"
            ):
                return False
            if any(r["flags"] != "slave" for r in _client(p).sentinel_slaves(MASTER_NAME)):
                return False
        return True

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master_port()
        node = self.node(port)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(TIMEOUT)
        node.proc = None
        self.killed_at = time.monotonic()
        return port

    def manual_failover(self) -> int:
        """``SENTINEL FAILOVER``: the master stays up and is demoted to a replica; its port."""
        port = self.master_port()
        assert _client(self.sentinel_ports[0]).sentinel_failover(MASTER_NAME)
        return port

    def wait_new_master(self, old: int, timeout: float = TIMEOUT * 4) -> int:
        """The promoted replica's port, once a majority of sentinels name it and one
        replica is in sync with it (a demoted live master joins later: Sentinel converts
        it on its next INFO, up to 10 s)."""
        port: int = poll(lambda: (p := self.master_port()) != old and p, "failover", timeout)
        self.master = self.node(port)
        self.replicas = [n for n in self.nodes if n.port != port and n.proc is not None]
        poll(lambda: self._replicas_online(1), "a replica of the new master in sync", timeout)
        return port

    def stop_replicas(self) -> None:
        """SIGSTOP every replica: they stop acknowledging (``resume_replicas`` undoes)."""
        for n in self.replicas:
            assert n.proc is not None
            os.kill(n.proc.pid, signal.SIGSTOP)
            self._stopped.append(n.proc.pid)

    def cut_replicas(self) -> None:
        """Stop the replicas and drop their links, so the master's next writes reach
        no replica (a partition: bytes already in a stopped replica's socket buffer
        would still arrive, a dropped link carries nothing more)."""
        self.stop_replicas()
        _client(self.master.port).client_kill_filter(_type="replica")

    def resume_replicas(self) -> None:
        while self._stopped:
            os.kill(self._stopped.pop(), signal.SIGCONT)

    def flushall(self) -> None:
        """Empty the master, and wait until the replicas are empty too."""
        _client(self.master.port).flushall()
        poll(
            lambda: all(_client(r.port).dbsize() == 0 for r in self.replicas),
            "replicas flushed",
        )

    def close(self) -> None:
        self.resume_replicas()
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(TIMEOUT)
            n.proc = None
            n.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        """The sentinels' logs (for failure messages)."""
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.dir.glob("*.log"))
        )

    def __enter__(self) -> SentinelSet:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
