"""A real Redis Cluster for tests: 3 masters with ``replicas`` replicas each.

Every node listens on its own free loopback port (never 6379) with its own directory
(``nodes.conf``, log) under the cluster's temp dir, and runs with
``cluster-node-timeout`` 1000 ms, so a killed master's replica is promoted within a
few seconds. ``redis-cli --cluster create`` assigns the slots and the replicas; readiness
and failover are waited for by polling conditions with timeouts, never by fixed sleeps.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from .redis_sentinel import poll
from .redis_server import REDIS_SERVER, RedisServer
from .support import TIMEOUT, free_port

NODE_TIMEOUT_MS = 1000
REDIS_CLI = shutil.which("redis-cli")


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0, socket_connect_timeout=1.0)


def key_slot(key: str) -> int:
    """The cluster slot of ``key`` (asked of no server: CRC16 of the hash tag)."""
    from redis.crc import key_slot as _slot

    return int(_slot(key.encode()))


class RedisClusterSet:
    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server / redis-cli are not installed (apt-get install redis)")
        self.dir = Path(tempfile.mkdtemp(prefix="frt-cluster-"))
        self.masters = masters
        self.replicas = replicas
        self.nodes = [RedisServer() for _ in range(masters * (1 + replicas))]
        self.killed: list[RedisServer] = []

    @staticmethod
    def _cluster_args(node: RedisServer) -> list[str]:
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node.dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # Its own free bus port (the default, port + 10000, may be taken or > 65535).
            "--cluster-port",
            str(free_port()),
            # A replica takes over however long its link was down (tests kill masters
            # right after writing), and replication starts at once.
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
            "--protected-mode",
            "no",
        ]

    def _start_node(self, node: RedisServer) -> None:
        """Start ``node``; on a port taken meanwhile (free_port() only probes), again on
        fresh ports."""
        for attempt in range(5):
            node.args = self._cluster_args(node)
            try:
                node.start()
                return
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 4:
                    raise
                node.port = free_port()

    # -- addresses ---------------------------------------------------------------

    def url(self, nodes: int = 3) -> str:
        """``redis+cluster://`` with the first ``nodes`` nodes as startup nodes."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:nodes])
        return f"redis+cluster://{hosts}"

    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None]

    def slots(self) -> dict[int, tuple[int, int]]:
        """Master port -> (first, last) slot ranges as a live node sees them (the first
        range of each master; ``redis-cli --cluster create`` gives each one range)."""
        for n in self.live():
            try:
                raw = _client(n.port).execute_command("CLUSTER", "SLOTS")
            except (redis.RedisError, OSError):
                continue
            return {int(r[2][1]): (int(r[0]), int(r[1])) for r in raw}
        raise RuntimeError("no live cluster node answers CLUSTER SLOTS")

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        slot = key_slot(key)
        for port, (lo, hi) in self.slots().items():
            if lo <= slot <= hi:
                return port
        raise RuntimeError(f"slot {slot} is not served")

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> RedisClusterSet:
        for n in self.nodes:
            self._start_node(n)
        subprocess.run(
            [
                str(REDIS_CLI),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT * 4,
        )
        poll(self._ready, "cluster_state:ok with every replica in sync", TIMEOUT * 6)
        return self

    def _ready(self) -> bool:
        masters = 0
        for n in self.live():
            c = _client(n.port)
            if c.cluster("info")["cluster_state"] != "ok":
                return False
            info = c.info("replication")
            if info["role"] == "master":
                masters += 1
                links = [
                    v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                ]
                if sum(1 for v in links if v.get("state") == "online") < self.replicas:
                    return False
            elif info.get("master_link_status") != "up":
                return False
        return masters == self.masters

    def kill_master(self, port: int) -> None:
        """SIGKILL the master on ``port``."""
        node = self.node(port)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(TIMEOUT)
        node.proc = None
        self.killed.append(node)

    def wait_promoted(self, old: int, slot_key: str, timeout: float = TIMEOUT * 4) -> int:
        """Once a replica of the killed master ``old`` serves ``slot_key``'s slot, with
        ``cluster_state:ok`` on every live node and every remaining replica of it in sync;
        the new master's port."""

        def promoted() -> int:
            port = self.master_of(slot_key)
            if port == old:
                return 0
            for n in self.live():
                if _client(n.port).cluster("info")["cluster_state"] != "ok":
                    return 0
            info = _client(port).info("replication")
            want = self.replicas - 1
            links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return port if sum(1 for v in links if v.get("state") == "online") >= want else 0

        port: int = poll(promoted, "a replica promoted", timeout)
        return port

    def flushall(self) -> None:
        """Empty every master, and wait until every replica is empty too."""
        for n in self.live():
            if _client(n.port).info("replication")["role"] == "master":
                _client(n.port).flushall()
        poll(lambda: all(_client(n.port).dbsize() == 0 for n in self.live()), "cluster flushed")

    def close(self) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(TIMEOUT)
            n.proc = None
            n.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(
            f"--- {n.port}\n" + (n.dir / "redis.log").read_text(errors="replace")[-2000:]
            for n in self.nodes
            if (n.dir / "redis.log").exists()
        )

    def __enter__(self) -> RedisClusterSet:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
