"""Cluster registry: which instances are alive, what they carry, where each connection is.

With the Redis broker every instance heartbeats into Redis (keys below, each with a
TTL of three heartbeats, so a crashed instance's entries expire on their own; on a
Redis Cluster they are spread over the slots, so the registry uses single-key commands
only, pipelined: the cluster client sends each to its slot's master):

* ``frt:instances``         sorted set: instance id -> last heartbeat (unix seconds).
* ``frt:instance:<id>``     JSON figures of that instance (its /realtime/stats subset).
* ``frt:conns:<id>``        hash: connection id -> JSON details of that connection.

Connections are registered as they come and go (batched by a background task, so
churn costs one pipeline per batch); their details (counters, subscriptions) are
refreshed on each heartbeat, so a remote answer is at most one heartbeat old.
With the memory broker the "cluster" is this instance alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisClusterException, RedisError

from ..brokers.base import Broker
from ..brokers.redis_cluster import closed_under_command
from ..tasks import cancelling, stop_task
from .connection import Connection

if TYPE_CHECKING:
    from ..brokers.base import RedisClient

log = logging.getLogger("football_realtime.cluster")
#: What a registry command may raise (a cluster client also raises RedisClusterException).
_ERRORS = (RedisError, OSError, RedisClusterException)

PREFIX = "frt"
INSTANCES = f"{PREFIX}:instances"
#: Figures summed into the cluster totals (and shown per instance).
SUMMED = (
    "active_connections",
    "subscriptions",
    "users",
    "rooms",
    "events_published",
    "messages_sent",
    "messages_received",
    "bytes_sent",
    "bytes_received",
    "connections_opened",
    "connections_closed",
    "errors",
    "slow_consumer_disconnects",
)
#: Further per-instance figures (not summed).
SHOWN = ("uptime_seconds", "broker", "broker_healthy", "messages_per_second")


def _instance_key(instance_id: str) -> str:
    return f"{PREFIX}:instance:{instance_id}"


def _conns_key(instance_id: str) -> str:
    return f"{PREFIX}:conns:{instance_id}"


def _signature(conn: Connection) -> tuple[int, int, int, int]:
    return (
        conn.messages_sent,
        conn.messages_received,
        len(conn.subscriptions),
        len(conn.rooms) if conn.rooms else 0,
    )


class ClusterRegistry:
    def __init__(
        self,
        instance_id: str,
        connections: Mapping[str, Connection],
        broker: Broker,
        redis: RedisClient | None,
        heartbeat_interval: float,
    ) -> None:
        """``connections``: this instance's connections (the hub's table, which tells
        the registry of changes through :meth:`on_membership`); ``redis``: the shared
        store, None when the cluster is this instance alone."""
        self.instance_id = instance_id
        self.connections = connections
        self.broker = broker
        self.redis = redis
        self.interval = heartbeat_interval
        self.ttl = max(1, round(heartbeat_interval * 3))
        self._snapshot: Callable[[], dict[str, Any]] = dict
        self._added: set[str] = set()
        self._removed: set[str] = set()
        self._written: dict[str, tuple[int, int, int, int]] = {}
        self._full = True  # rewrite everything on the next flush (start, after an outage)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.available = redis is None

    # -- hub hook ------------------------------------------------------------------

    def on_membership(self, conn: Connection, added: bool) -> None:
        if self.redis is None:
            return
        if added:
            self._added.add(conn.id)
        else:
            self._added.discard(conn.id)
            if conn.id in self._written:
                self._removed.add(conn.id)
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Start heartbeating ``snapshot()`` (this instance's /realtime/stats)."""
        self._snapshot = snapshot
        if self.redis is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="cluster-registry")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
        if self.redis is not None:
            with contextlib.suppress(*_ERRORS, TimeoutError):
                async with asyncio.timeout(1.0), self.redis.pipeline(transaction=False) as p:
                    p.zrem(INSTANCES, self.instance_id)
                    p.delete(_instance_key(self.instance_id))
                    p.delete(_conns_key(self.instance_id))
                    await p.execute()

    async def _run(self) -> None:
        next_beat = 0.0
        while True:
            now = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - now)):
                    await self._wake.wait()
            self._wake.clear()
            beat = time.monotonic() >= next_beat
            try:
                await self._flush(beat)
                if not self.available:
                    log.info("cluster registry reachable again")
                self.available = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # (A command whose connection the cluster client closed under it, when
                # another command reset it, is a connection error too.)
                if not isinstance(exc, _ERRORS) and not closed_under_command(exc):
                    log.exception("cluster registry flush failed")
                    self._full = True
                else:
                    if cancelling():
                        raise asyncio.CancelledError from exc
                    if self.available:
                        log.warning("cluster registry unavailable: %s", exc)
                    self.available = False
                    self._full = True
                    await asyncio.sleep(min(self.interval, 1.0))
                    continue
            if beat:
                next_beat = time.monotonic() + self.interval

    def _entry(self, conn: Connection) -> bytes:
        d = conn.describe()
        d["instance_id"] = self.instance_id
        d["as_of"] = time.time()
        return orjson.dumps(d)

    async def _flush(self, beat: bool) -> None:
        assert self.redis is not None
        conns = self.connections
        me = _conns_key(self.instance_id)
        if beat and not self._full:
            # Someone flushed Redis or our hash expired while we were paused.
            self._full = int(await self.redis.hlen(me)) != len(self._written)
        full = self._full
        write: dict[str, bytes] = {}
        if full:
            targets = list(conns)
            removed: list[str] = []
        else:
            targets = [cid for cid in self._added if cid in conns]
            removed = [cid for cid in self._removed if cid not in conns]
            if beat:
                targets += [
                    cid
                    for cid, sig in self._written.items()
                    if cid in conns and _signature(conns[cid]) != sig
                ]
        signatures: dict[str, tuple[int, int, int, int]] = {}
        for cid in targets:
            conn = conns[cid]
            write[cid] = self._entry(conn)
            signatures[cid] = _signature(conn)
        async with self.redis.pipeline(transaction=False) as p:
            if full:
                p.delete(me)
            if write:
                p.hset(me, mapping=write)  # type: ignore[arg-type]
            if removed:
                p.hdel(me, *removed)
            if beat or full:
                now = time.time()
                p.set(
                    _instance_key(self.instance_id), orjson.dumps(await self.figures()), ex=self.ttl
                )
                p.zadd(INSTANCES, {self.instance_id: now})
                p.zremrangebyscore(INSTANCES, "-inf", now - 10 * self.ttl)
            p.expire(me, self.ttl)
            await p.execute()
        if full:
            self._written = {}
        self._full = False
        self._added.difference_update(targets)
        self._removed.difference_update(removed)
        for cid in removed:
            self._written.pop(cid, None)
        # Connections may have closed while the pipeline waited on Redis: their entries
        # were written all the same, so they are removed on the next flush.
        for cid, sig in signatures.items():
            self._written[cid] = sig
            if cid not in conns:
                self._removed.add(cid)
                self._wake.set()

    # -- reading -------------------------------------------------------------------

    async def figures(self) -> dict[str, Any]:
        snap = self._snapshot()
        out = {k: snap[k] for k in (*SUMMED, *SHOWN) if k in snap}
        out["instance_id"] = self.instance_id
        out["broker_healthy"] = await self.broker.healthy()
        return out

    async def _live_instances(self) -> list[str]:
        assert self.redis is not None
        now = time.time()
        ids = await self.redis.zrangebyscore(INSTANCES, now - self.ttl, "+inf")
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def lookup(self, connection_id: str) -> dict[str, Any] | None:
        """Details of a connection held by another live instance, or None."""
        if self.redis is None:
            return None
        ids = [i for i in await self._live_instances() if i != self.instance_id]
        if not ids:
            return None
        async with self.redis.pipeline(transaction=False) as p:
            for i in ids:
                p.hget(_conns_key(i), connection_id)
            found = await p.execute()
        for raw in found:
            if raw is not None:
                d: dict[str, Any] = orjson.loads(raw)
                d["local"] = False
                d["as_of_seconds"] = round(max(0.0, time.time() - d.pop("as_of", 0.0)), 3)
                return d
        return None

    async def overview(self) -> dict[str, Any]:
        """Cluster totals and per-instance figures; this instance's are live."""
        mine = await self.figures()
        mine["last_seen_seconds"] = 0.0
        instances: dict[str, dict[str, Any]] = {self.instance_id: mine}
        available = True
        if self.redis is not None:
            try:
                ids = await self._live_instances()
                others = [i for i in ids if i != self.instance_id]
                if others:
                    async with self.redis.pipeline(transaction=False) as p:
                        for i in others:  # GETs, not one MGET: keys of several slots
                            p.get(_instance_key(i))
                        p.zmscore(INSTANCES, others)
                        *raws, scores = await p.execute()
                    now = time.time()
                    for i, raw, score in zip(others, raws, scores, strict=True):
                        if raw is None:
                            continue  # expired between the two reads
                        fig = orjson.loads(raw)
                        fig["last_seen_seconds"] = round(max(0.0, now - (score or now)), 3)
                        instances[i] = fig
            except _ERRORS as exc:
                available = False
                log.debug("cluster overview without redis: %s", exc)
        totals = {k: sum(int(f.get(k, 0)) for f in instances.values()) for k in SUMMED}
        return {
            "registry_available": available,
            "instance_count": len(instances),
            "totals": totals,
            "instances": sorted(instances.values(), key=lambda f: str(f["instance_id"])),
        }
