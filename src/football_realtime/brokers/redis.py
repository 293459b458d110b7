"""The Redis broker: many instances, one ordered history per stream.

Keys and scripts: :mod:`.redis_layout`.

Delivery: every instance runs one reader task that ``XREAD BLOCK``s all streams
from the last id it delivered, so each instance hands the hub every event of a
stream in offset order, exactly once, including its own publishes (there is no
local short cut, so all instances see one order). After a Redis outage the reader
resumes from its last id: with persistence nothing is lost. When the epoch in
Redis changes (FLUSHALL, a new Redis without persistence) or the reader finds an
offset gap it cannot fill, it calls ``on_reset`` so the service can tell that
stream's subscribers to reconnect and recover (they get ``recovered: false``). After an
epoch change it delivers the new epoch from its first offset, so a client that
subscribed under the new epoch before this instance noticed misses nothing.

Failover (``redis+sentinel://``, brokers/sentinel.py): connections are opened to the
master the sentinels name, so after a failover the reader and the publishers reconnect
to the promoted replica by themselves. Replication is asynchronous: the promoted replica
may lack the newest writes, its offset counter is then behind what readers delivered,
and new publishes reuse those offsets. The reader's resync (``ENSURE_SCRIPT``) therefore
checks that the entry at the last offset it delivered is still the one it delivered
(``n``); when the counter went back or that entry is another write, it rotates the
epoch, so every subscriber that saw the lost events is told (``recovered: false``).

Redis Cluster (``redis+cluster://``, brokers/redis_cluster.py): the ``{frt:S}`` hash tag
puts each stream in its own slot, and every script and pipeline here touches one
stream's keys (plus, in one pipeline, a keyless ``WAIT``/``TIME`` addressed to that
slot's master). An ``XREAD`` over keys of several slots is refused (CROSSSLOT) even on
one node, so an instance runs one reader per stream (:class:`_Lane`) instead of one for
all; each resyncs and recovers on its own, so a shard's failover pauses only the
streams it serves (with ``cluster-require-full-coverage no``; else the whole cluster
answers CLUSTERDOWN until the replica is promoted). redis-py's cluster client follows a failover (connection error or
``MOVED``: it re-reads the slot map).

``min_replicas`` (``REALTIME_REDIS_MIN_REPLICAS``) > 0: a publish sends its script and
``WAIT min_replicas WAIT_TIMEOUT_MS`` in one pipeline on one connection, and succeeds
only when that many replicas acknowledged the write; readers deliver an entry only
after a ``WAIT`` on their own connection (behind a small write) says that many replicas
hold it. A failover to the most up-to-date replica then loses no acknowledged and no
delivered event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ..core.encoding import dumps
from ..core.events import SubscriptionType
from ..tasks import cancelling, stop_task
from .base import (
    BrokerUnavailable,
    CriticalRetention,
    Deliver,
    PublishedEvent,
    PublishResult,
    Reset,
)
from .redis_cluster import (
    closed_under_command,
    cluster_client,
    is_cluster_url,
    parse_cluster_url,
)
from .redis_layout import (
    ENSURE_SCRIPT,
    PREFIX,
    PUBLISH_SCRIPT,
    as_str,
    crit_key,
    idem_key,
    owner_key,
    session_key,
    snapshot_field,
    stored_event,
    stream_keys,
)
from .sentinel import is_sentinel_url, master_client, parse_sentinel_url, sentinel_manager

log = logging.getLogger("football_realtime.brokers.redis")

#: How long a client-supplied ``Idempotency-Key`` is remembered (seconds).
IDEMPOTENCY_WINDOW = 300
#: Every publish also carries an internal id remembered this long, so that the one
#: automatic retry after a connection error cannot publish twice.
RETRY_WINDOW = 10
#: The snapshot hash of a stream expires after this long without any publish.
SNAPSHOT_TTL = 24 * 3600
COMMAND_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
#: How long a command waits for a free pooled connection when all
#: ``REALTIME_REDIS_MAX_CONNECTIONS`` are busy, before it fails as unavailable (seconds).
POOL_TIMEOUT = COMMAND_TIMEOUT
#: ``REALTIME_REDIS_MAX_CONNECTIONS``'s default (docs/scaling.md, Connections to Redis).
DEFAULT_MAX_CONNECTIONS = 32
READ_BLOCK_MS = 1000
READ_COUNT = 1000
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
#: With ``min_replicas`` > 0: how long a publish (and the reader, before delivering)
#: waits for the replicas' acknowledgement (``WAIT``), in milliseconds. Below
#: COMMAND_TIMEOUT; a healthy replica on a LAN acknowledges within a millisecond or two.
WAIT_TIMEOUT_MS = 1000
#: Sentinel: how often the reader and publishers ask the sentinels whether the master
#: moved (a demoted master stays reachable until Sentinel reconfigures it).
MASTER_CHECK_INTERVAL = 1.0
#: history() waits at most this long for this instance's reader to reach a client's
#: offset (the client came from an instance that was a few milliseconds ahead).
CATCH_UP_TIMEOUT = 2.0

_T = TypeVar("_T")
#: What a Redis command may raise (a cluster client also raises RedisClusterException,
#: e.g. a slot no master serves).
_ERRORS = (RedisError, OSError, RedisClusterException)
_STALE = object()  # history read under an epoch the reader has not adopted yet


@dataclass(eq=False)
class _Lane:
    """One reader task and the streams it reads with one blocking ``XREAD``: every
    stream on one Redis; one stream per lane on a cluster (an ``XREAD`` over keys of
    different slots is refused with CROSSSLOT, even when one node serves them all)."""

    streams: tuple[SubscriptionType, ...]
    #: The key the reader writes before its ``WAIT`` (in the lane's slot on a cluster).
    marker: str
    resync: asyncio.Event = field(default_factory=asyncio.Event)
    live: bool = False
    synced: bool = False  # positioned once (start() waits for every lane)
    checked: float = 0.0  # Sentinel: when the reader last asked whether the master moved
    task: asyncio.Task[None] | None = None


class RedisBroker:
    """Broker over one Redis (or one shard per stream); see the module docstring.

    ``reader=False`` (the standalone :class:`~football_realtime.publisher.Publisher`)
    publishes and reads history but delivers nothing. ``url`` is ``redis://``,
    ``rediss://``, ``unix://``, ``redis+sentinel://`` (brokers/sentinel.py) or
    ``redis+cluster://`` (brokers/redis_cluster.py).
    ``min_replicas``: acknowledge a publish only once that many replicas hold it (and
    deliver only such events); see the module docstring.
    ``critical``: the events also kept in ``{frt:S}:crit`` for durable sessions.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        history_ttl: float,
        reader: bool = True,
        min_replicas: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        critical: CriticalRetention | None = None,
    ) -> None:
        self.url = url
        self.critical = critical if critical is not None else CriticalRetention()
        self._critical_ttl_ms = max(1, int(self.critical.ttl * 1000))
        self.max_connections = max(1, max_connections)
        self.history_size = max(1, history_size)  # delivery itself runs through the stream
        self.history_ttl_ms = max(1, int(history_ttl * 1000))
        self.min_replicas = max(0, min_replicas)
        self._sentinel: Sentinel | None = None
        self._cluster = is_cluster_url(url)
        if is_sentinel_url(url):
            self.name = "redis-sentinel"
            target = parse_sentinel_url(url)
            manager = self._sentinel = sentinel_manager(target, timeout=CONNECT_TIMEOUT)

            def client(**kw: Any) -> Redis | RedisCluster:
                return master_client(manager, target, timeout=POOL_TIMEOUT, **kw)
        elif self._cluster:
            self.name = "redis-cluster"
            nodes = parse_cluster_url(url)

            def client(**kw: Any) -> Redis | RedisCluster:
                return cluster_client(nodes, timeout=POOL_TIMEOUT, **kw)
        else:

            def client(**kw: Any) -> Redis | RedisCluster:
                return Redis.from_pool(
                    BlockingConnectionPool.from_url(url, timeout=POOL_TIMEOUT, **kw)
                )

        # Every client's pool holds at most ``max_connections`` connections (per node on
        # a cluster); a command finding them all busy waits up to POOL_TIMEOUT for one,
        # then fails as unavailable (docs/scaling.md, Connections to Redis).
        self.redis: Redis | RedisCluster = client(
            max_connections=self.max_connections,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
        self._reader_redis: Redis | RedisCluster | None = (
            client(
                # Its lanes each hold one connection through their XREAD BLOCK.
                max_connections=max(self.max_connections, len(SubscriptionType)),
                socket_timeout=READ_BLOCK_MS / 1000 + COMMAND_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
            if reader
            else None
        )
        # Readers: one for every stream on one Redis, one per stream on a cluster. A
        # reader's WAIT needs a write of its own on its connection (WAIT waits for the
        # replication offset of the connection's last write), in its shard.
        me = secrets.token_hex(6)
        if self._cluster:
            self._lanes = [
                _Lane((st,), f"{{{PREFIX}:{st.value}}}:reader:{me}") for st in SubscriptionType
            ]
        else:
            self._lanes = [_Lane(tuple(SubscriptionType), f"{PREFIX}:reader:{me}")]
        self._lane_of = {st: lane for lane in self._lanes for st in lane.streams}
        self._publish = self.redis.register_script(PUBLISH_SCRIPT)
        self._ensure = self.redis.register_script(ENSURE_SCRIPT)
        self._deliver: Deliver | None = None
        self.on_reset: Reset | None = None
        # Per stream: the epoch this instance delivers under and the last offset it
        # delivered. Valid while the stream's lane is live.
        self._epoch: dict[SubscriptionType, str] = {}
        self._last: dict[SubscriptionType, int] = {}
        # The write id (``n``) of the entry at self._last, '' when unknown.
        self._last_id: dict[SubscriptionType, str] = {}
        self._stopping = False
        self._fresh: set[SubscriptionType] = set()  # new epoch, nothing delivered yet
        self._progress = asyncio.Condition()
        self._started = False
        self._checks: set[asyncio.Task[bool]] = set()
        self._master_checked = 0.0
        self._ready: asyncio.Future[None] | None = None
        self.resets = 0
        self.outages = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, deliver: Deliver, on_reset: Reset | None = None) -> None:
        """Start the reader; returns once it is positioned at the current end of every
        stream, or after ``CONNECT_TIMEOUT`` when Redis is down (the reader keeps
        retrying with backoff and ``healthy()`` says False meanwhile)."""
        self._deliver = deliver
        if on_reset is not None:
            self.on_reset = on_reset
        if self._reader_redis is None or self._started:
            return
        self._started = True
        self._ready = asyncio.get_running_loop().create_future()
        for lane in self._lanes:
            name = "redis-broker-reader" + ("-" + lane.streams[0] if self._cluster else "")
            lane.task = asyncio.create_task(self._read_loop(lane), name=name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ready), CONNECT_TIMEOUT * 3)

    async def stop(self) -> None:
        self._stopping = True
        for lane in self._lanes:
            task, lane.task = lane.task, None
            if task is not None:
                await stop_task(task)
            lane.live = False
        if self._checks:
            # A master check cancelled while redis-py opens a connection to a sentinel
            # leaves that socket open (redis-py does not close it on cancellation; the
            # tests saw it garbage-collected later): let checks end first, within the
            # time one takes. No new one starts once stopping.
            await asyncio.wait(list(self._checks), timeout=CONNECT_TIMEOUT)
        for check in list(self._checks):
            check.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._deliver = None
        await self.redis.aclose()
        if self._reader_redis is not None:
            await self._reader_redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def healthy(self) -> bool:
        if self._reader_redis is not None:
            return all(lane.live for lane in self._lanes)
        try:
            return bool(await self.redis.ping())
        except _ERRORS:
            return False

    # -- publishing --------------------------------------------------------------

    async def publish(
        self, envelope: dict[str, Any], stream: SubscriptionType, idempotency_key: str | None
    ) -> PublishResult:
        envelope.pop("stream", None)
        envelope.pop("offset", None)
        body = dumps(envelope)
        meta, log_key, snap = stream_keys(stream)
        if idempotency_key is not None:
            idem, ttl = idem_key(stream, "k:" + idempotency_key), IDEMPOTENCY_WINDOW
        else:
            idem, ttl = idem_key(stream, "r:" + secrets.token_hex(8)), RETRY_WINDOW
        field = snapshot_field(str(envelope["event_type"]), envelope.get("data") or {})
        keys = [meta, log_key, snap, idem, crit_key(stream)]
        args: list[Any] = [
            secrets.token_hex(6),
            body[:-1],
            stream.value,
            self.history_size,
            self.history_ttl_ms,
            ttl,
            field,
            max(SNAPSHOT_TTL, self.history_ttl_ms // 1000),
            "1" if envelope["event_type"] in self.critical.types else "",
            self.critical.size,
            self._critical_ttl_ms,
        ]
        if self._sentinel is not None:
            self._check_master_soon()
        try:
            if self.min_replicas:
                res = await self._publish_replicated(keys, args)
            else:
                res = await self._call(self._publish(keys=keys, args=args))
        except BrokerUnavailable:
            if self._sentinel is not None:
                await self._follow_master(self.redis)  # the next retry goes to the new one
            raise
        offset, epoch, dup = int(res[0]), as_str(res[1]), bool(int(res[2]))
        if self._lane_of[stream].live and epoch != self._epoch.get(stream):
            self._lane_of[stream].resync.set()  # our reader has not noticed the new epoch
        return PublishResult(stream, offset, epoch, duplicate=dup)

    async def _publish_replicated(self, keys: list[str], args: list[Any]) -> Any:
        """The publish script and ``WAIT`` in one pipeline on one connection (the WAIT
        covers that connection's last write: this publish, or an idempotent retry's
        rewrite of its record)."""
        for attempt in (1, 2):
            shard = await self._call(self._shard(self.redis, keys[0]))
            async with self.redis.pipeline(transaction=False) as pipe:
                # (execute_command: redis-py's cluster pipeline refuses ``evalsha()`` since
                # a script could touch several slots; this one touches one stream's keys.)
                pipe.execute_command("EVALSHA", self._publish.sha, len(keys), *keys, *args)
                pipe.wait(self.min_replicas, WAIT_TIMEOUT_MS, **shard)
                res, acked = await self._call(pipe.execute(raise_on_error=False))
            if shard and shard != await self._call(self._shard(self.redis, keys[0])):
                # The slot moved (MOVED: the script was redirected, the WAIT was not).
                raise BrokerUnavailable(
                    "redis: the stream's shard changed during the publish; the event may "
                    "still be delivered: retry with the same idempotency key"
                )
            if isinstance(res, NoScriptError) and attempt == 1:
                # A new master (failover, restart) without the script: nothing ran.
                await self._call(self.redis.script_load(PUBLISH_SCRIPT))
                continue
            for reply in (res, acked):
                if isinstance(reply, Exception):
                    raise BrokerUnavailable(f"redis: {type(reply).__name__}: {reply}")
            if int(acked) < self.min_replicas:
                raise BrokerUnavailable(
                    f"redis: only {int(acked)} of {self.min_replicas} replicas acknowledged "
                    f"within {WAIT_TIMEOUT_MS} ms (REALTIME_REDIS_MIN_REPLICAS); the event "
                    "may still be delivered: retry with the same idempotency key"
                )
            return res
        raise BrokerUnavailable("redis: the publish script could not be loaded")

    @staticmethod
    async def _shard(client: Redis | RedisCluster, key: str) -> dict[str, Any]:
        """Cluster: ``target_nodes=`` the master serving ``key``'s slot, for a keyless
        command (``WAIT``, ``TIME``) that must run there, on the same connection as the
        key's commands of one pipeline. ``{}`` on one Redis."""
        if not isinstance(client, RedisCluster):
            return {}
        await client.initialize()
        return {"target_nodes": client.get_node_from_key(key)}

    def _check_master_soon(self) -> None:
        """Sentinel: at most once per MASTER_CHECK_INTERVAL, in the background, ask the
        sentinels whether the master moved (publishes never wait for it)."""
        now = asyncio.get_running_loop().time()
        if now - self._master_checked < MASTER_CHECK_INTERVAL or self._stopping:
            return
        self._master_checked = now
        check = asyncio.create_task(self._follow_master(self.redis), name="redis-master-check")
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _follow_master(self, client: Redis | RedisCluster) -> bool:
        """Sentinel: True when the sentinels now name another master than the one
        ``client``'s connections go to; its idle connections are then dropped and its
        busy ones reconnect when released, so the next commands go to the new master."""
        if not isinstance(client, Redis):
            return False
        pool = client.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return False
        before = pool.master_address
        try:
            # Drops the pool's idle connections when the master moved.
            after = await pool.get_master_address()  # type: ignore[no-untyped-call]
            if before is None or after == before:
                return False
            await pool.update_active_connections_for_reconnect()  # type: ignore[no-untyped-call]
        except _ERRORS:
            return False
        log.warning("redis master moved from %s to %s", before, after)
        return True

    async def _call(self, aw: Awaitable[_T]) -> _T:
        try:
            return await aw
        except _ERRORS as exc:
            raise BrokerUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        except AttributeError as exc:
            if not closed_under_command(exc):
                raise
            raise BrokerUnavailable("redis: the connection was closed during the command") from exc

    # -- positions and history -----------------------------------------------------

    async def position(self, stream: SubscriptionType) -> tuple[str, int]:
        """The stream's epoch and newest offset in Redis (this instance's reader may be
        a few milliseconds behind: :meth:`history` waits for it).

        With a live reader the epoch is also the one it delivers under: when Redis has
        another (an instance rotated it after a failover), this waits for our reader to
        adopt it first. Otherwise a subscriber positioned under the new epoch would
        still get the old epoch's events our reader delivers meanwhile (events carry
        no epoch), would be spared by the reset (it "subscribed under the new epoch
        already"), and would then drop the new epoch's events at the same offsets as
        duplicates: a silent gap."""
        meta, log_key, snap = stream_keys(stream)
        res = await self._call(
            self._ensure(
                keys=[meta, log_key, snap, crit_key(stream)],
                args=[secrets.token_hex(6), "", 0, ""],
            )
        )
        epoch = as_str(res[0])
        lane = self._lane_of[stream]
        if lane.live and self._epoch.get(stream) != epoch:
            # Redis has a new epoch our reader has not seen yet.
            await self._await_resync(stream)
            if self._epoch.get(stream) != epoch:
                raise BrokerUnavailable("redis: the stream's epoch is changing; retry")
        offset = int(res[1])
        if lane.live and self._last.get(stream, 0) < offset:
            # Only entries can be delivered: after a rotation the counter is ahead of
            # an empty log (its offsets were never written under this epoch).
            newest = await self._call(self.redis.xrevrange(log_key, "+", "-", count=1))
            top = int(as_str(newest[0][0]).split("-", 1)[0]) if newest else 0
            await self._delivered(stream, epoch, min(offset, top))
        return epoch, offset

    async def _delivered(self, stream: SubscriptionType, epoch: str, offset: int) -> None:
        """Wait until our reader has delivered ``offset`` of ``epoch`` (milliseconds
        behind Redis's counter; longer while ``min_replicas`` replicas do not hold it).

        A subscriber is positioned (its floor) at the offset position() names, so that
        offset must be one a reader delivered: only such offsets are checked when a
        failover loses writes (ENSURE_SCRIPT: the counter went back, or the entry there is
        another write) and rotate the epoch. An undelivered one (a publish whose WAIT
        failed) may vanish in a failover unnoticed, and the next publish would reuse
        it: the subscriber would drop that acknowledged event as already covered."""
        lane = self._lane_of[stream]
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT), self._progress:
                await self._progress.wait_for(
                    lambda: (
                        not lane.live
                        or self._epoch.get(stream) != epoch
                        or self._last.get(stream, 0) >= offset
                    )
                )
        except TimeoutError:
            raise BrokerUnavailable(
                "redis: this instance has not delivered the stream's newest event yet "
                "(replicas lagging?)"
            ) from None
        self._require_live(stream)
        if self._epoch.get(stream) != epoch:
            raise BrokerUnavailable("redis: the stream's epoch is changing; retry")

    def _require_live(self, stream: SubscriptionType) -> None:
        if not self._lane_of[stream].live:
            raise BrokerUnavailable("redis: not connected (reconnecting)")

    async def history(self, stream: SubscriptionType, after: int) -> list[PublishedEvent] | None:
        res = await self._history(stream, after)
        if res is _STALE:
            await self._await_resync(stream)
            res = await self._history(stream, after)
        return None if res is _STALE else res

    async def _await_resync(self, stream: SubscriptionType) -> None:
        """Our reader still delivers under an epoch Redis no longer has: let it resync."""
        old = self._epoch.get(stream)
        lane = self._lane_of[stream]
        lane.resync.set()
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT), self._progress:
                await self._progress.wait_for(
                    lambda: not lane.live or self._epoch.get(stream) != old
                )
        except TimeoutError:
            raise BrokerUnavailable("redis: this instance's reader is resyncing") from None
        self._require_live(stream)

    async def _history(self, stream: SubscriptionType, after: int) -> Any:
        """Events after ``after`` up to what this instance has delivered: later ones reach
        the caller live (the recovery flow holds them), so replay plus live has neither
        gap nor overlap. When ``after`` is beyond what this instance has delivered (the
        client came from an instance a few milliseconds ahead), waits for the reader."""
        if self._reader_redis is None:
            _, top = await self.position(stream)
            epoch = None
        else:
            self._require_live(stream)
            epoch, top = self._epoch[stream], self._last[stream]
            if after > top:
                return await self._catch_up(stream, epoch, after)
        if after >= top:
            return []
        _, log_key, _ = stream_keys(stream)
        out: list[PublishedEvent] = []
        start = after + 1
        shard = await self._call(self._shard(self.redis, log_key))  # its clock, as in `t`
        while start <= top:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("TIME", **shard)  # (blocked as pipe.time() on a cluster)
                pipe.xrange(log_key, f"{start}-0", f"{top}-0", count=READ_COUNT)
                now, entries = await self._call(pipe.execute())
            if not entries:
                return None
            cutoff = (int(now[0]) * 1000 + int(now[1]) // 1000) - self.history_ttl_ms
            for entry_id, fields in entries:
                off = int(as_str(entry_id).split("-", 1)[0])
                if off != start or float(fields[b"t"]) < cutoff:
                    return None  # trimmed by length or age: never a partial replay
                if epoch is not None and as_str(fields[b"e"]) != epoch:
                    return _STALE
                out.append(stored_event(stream, fields[b"p"], float(fields[b"t"])))
                start += 1
        return out

    async def history_tail(self, stream: SubscriptionType, after: int) -> list[PublishedEvent]:
        return await self._kept(stream, after, stream_keys(stream)[1], self.history_ttl_ms)

    async def critical_history(self, stream: SubscriptionType, after: int) -> list[PublishedEvent]:
        return await self._kept(stream, after, crit_key(stream), self._critical_ttl_ms)

    async def _kept(
        self, stream: SubscriptionType, after: int, key: str, ttl_ms: int
    ) -> list[PublishedEvent]:
        """The entries of ``key`` (the log, or the critical events) after ``after`` up to
        what this instance delivered, younger than ``ttl_ms``, of the epoch it delivers
        under (KeepsCritical: later ones reach the caller live)."""
        if self._reader_redis is None:
            epoch, top = await self.position(stream)
        else:
            self._require_live(stream)
            epoch, top = self._epoch[stream], self._last[stream]
        out: list[PublishedEvent] = []
        start = after + 1
        shard = await self._call(self._shard(self.redis, key))  # its clock, as in `t`
        while start <= top:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("TIME", **shard)
                pipe.xrange(key, f"{start}-0", f"{top}-0", count=READ_COUNT)
                now, entries = await self._call(pipe.execute())
            if not entries:
                break
            cutoff = (int(now[0]) * 1000 + int(now[1]) // 1000) - ttl_ms
            for entry_id, fields in entries:
                off = int(as_str(entry_id).split("-", 1)[0])
                if float(fields[b"t"]) >= cutoff and as_str(fields[b"e"]) == epoch:
                    out.append(stored_event(stream, fields[b"p"], float(fields[b"t"])))
                start = off + 1
        return out

    async def _catch_up(
        self, stream: SubscriptionType, epoch: str, after: int
    ) -> list[PublishedEvent] | None:
        """The client has seen offsets this instance has not delivered yet: wait for the
        reader (milliseconds behind the instance the client came from)."""
        meta, _, _ = stream_keys(stream)
        top = await self._call(self.redis.hget(meta, "offset"))
        if top is None or int(top) < after:
            return None  # an offset this stream never had: not a continuation
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT), self._progress:
                await self._progress.wait_for(
                    lambda: (
                        not self._lane_of[stream].live
                        or self._epoch[stream] != epoch
                        or self._last[stream] >= after
                    )
                )
        except TimeoutError:
            raise BrokerUnavailable("redis: this instance's reader is lagging") from None
        self._require_live(stream)
        return [] if self._epoch[stream] == epoch else None

    # -- durable sessions (StoresSessions) -------------------------------------------

    async def load_session(self, session_id: str) -> bytes | None:
        raw = await self._call(self.redis.get(session_key(session_id)))
        if raw is None:
            return None
        return raw.encode() if isinstance(raw, str) else bytes(raw)

    async def save_session(
        self, session_id: str, state: bytes, ttl: float, owner: str | None
    ) -> None:
        ttl_ms = max(1, int(ttl * 1000))
        now_ms = int(time.time() * 1000)

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(session_key(session_id), state, px=ttl_ms)
                if owner is not None:
                    key = owner_key(owner)
                    pipe.zadd(key, {session_id: now_ms + ttl_ms})
                    pipe.zremrangebyscore(key, "-inf", now_ms)
                    # The index lives as long as its longest-lived session: set when it
                    # has no expiry, else only ever pushed later (a shorter session
                    # must not take the others' index with it).
                    pipe.pexpire(key, ttl_ms, nx=True)
                    pipe.pexpire(key, ttl_ms, gt=True)
                await pipe.execute()

        await self._call(write())

    async def touch_sessions(self, sessions: Sequence[tuple[str, str | None]], ttl: float) -> None:
        if not sessions:
            return
        ttl_ms = max(1, int(ttl * 1000))
        now_ms = int(time.time() * 1000)

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for session_id, owner in sessions:
                    pipe.pexpire(session_key(session_id), ttl_ms)
                    if owner is not None:
                        pipe.zadd(owner_key(owner), {session_id: now_ms + ttl_ms}, xx=True)
                        pipe.pexpire(owner_key(owner), ttl_ms, nx=True)
                        pipe.pexpire(owner_key(owner), ttl_ms, gt=True)
                await pipe.execute()

        await self._call(write())

    async def count_sessions(self, owner: str) -> int:
        key = owner_key(owner)

        async def count() -> int:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", int(time.time() * 1000))
                pipe.zcard(key)
                res = await pipe.execute()
            return int(res[1])

        return await self._call(count())

    async def snapshot(self, stream: SubscriptionType) -> list[PublishedEvent]:
        """The latest event per (event type, match) already delivered by this instance,
        oldest first."""
        _, _, snap = stream_keys(stream)
        if self._reader_redis is not None:
            self._require_live(stream)
            top = self._last[stream]
        else:
            top = (await self.position(stream))[1]
        raw: dict[Any, Any] = await self._call(self.redis.hgetall(snap))
        events = []
        for value in raw.values():
            off, _, payload = value.partition(b"|")
            if int(off) <= top:
                events.append(stored_event(stream, payload, 0.0))
        events.sort(key=lambda ev: ev.offset)
        return events

    # -- the reader ----------------------------------------------------------------

    async def _read_loop(self, lane: _Lane) -> None:
        assert self._reader_redis is not None
        backoff = BACKOFF_MIN
        need_sync = True
        while not self._stopping:
            try:
                if self._sentinel is not None:
                    now = asyncio.get_running_loop().time()
                    if now - lane.checked >= MASTER_CHECK_INTERVAL:
                        lane.checked = now
                        if await self._follow_master(self._reader_redis):
                            need_sync = True
                if need_sync or lane.resync.is_set():
                    lane.resync.clear()
                    await self._sync(lane)
                    need_sync = False
                    backoff = BACKOFF_MIN
                    lane.synced = True
                    ready = self._ready
                    everyone = all(other.synced for other in self._lanes)
                    if ready is not None and not ready.done() and everyone:
                        ready.set_result(None)
                got = await self._read_once(lane)
                if not got:
                    need_sync = True  # idle second: re-check epochs (FLUSHALL while idle)
            except asyncio.CancelledError:
                raise
            except _ERRORS as exc:
                if self._stopping or cancelling():
                    raise asyncio.CancelledError from exc  # redis-py wrapped our cancel
                if lane.live:
                    self.outages += 1
                    log.warning(
                        "redis unavailable for %s (%s); reconnecting with backoff",
                        ", ".join(lane.streams),
                        exc,
                    )
                await self._set_live(lane, False)
                if self._sentinel is not None and isinstance(self._reader_redis, Redis):
                    # Reconnect through the sentinels: the master may have changed (a
                    # demoted master still answers reads, as a replica).
                    with contextlib.suppress(*_ERRORS):
                        await self._reader_redis.connection_pool.disconnect()
                # (A cluster client re-learns the slots' masters by itself after a
                # connection error or MOVED, on its next command.)
                need_sync = True
                await asyncio.sleep(random.uniform(0, backoff))
                backoff = min(BACKOFF_MAX, backoff * 2)
            except Exception as exc:
                if closed_under_command(exc):
                    # The cluster client reset itself (another lane's CLUSTERDOWN) under
                    # this lane's command: a connection error; resync when it answers.
                    log.warning("redis connection closed under %s; resyncing", lane.streams)
                    await self._set_live(lane, False)
                    need_sync = True
                    await asyncio.sleep(random.uniform(0, backoff))
                    backoff = min(BACKOFF_MAX, backoff * 2)
                    continue
                log.exception("redis reader failed; restarting it")
                await self._set_live(lane, False)
                need_sync = True
                await asyncio.sleep(BACKOFF_MAX)

    async def _set_live(self, lane: _Lane, live: bool) -> None:
        lane.live = live
        async with self._progress:
            self._progress.notify_all()

    async def _sync(self, lane: _Lane) -> None:
        """Compare the lane's streams' epochs in Redis with the ones we deliver under.
        (The script touches one stream's keys, one slot: on one Redis one pipeline runs
        it for every stream; a cluster lane has one stream.)"""
        reader = self._reader_redis
        assert reader is not None
        first = lane.streams[0] not in self._epoch

        def ensure(st: SubscriptionType, client: Any) -> Awaitable[Any]:
            meta, log_key, snap = stream_keys(st)
            return self._ensure(
                keys=[meta, log_key, snap, crit_key(st)],
                args=[
                    secrets.token_hex(6),
                    self._epoch.get(st, ""),
                    self._last.get(st, 0),
                    self._last_id.get(st, ""),
                ],
                client=client,
            )

        if len(lane.streams) == 1:
            results = [await ensure(lane.streams[0], reader)]
        else:
            async with reader.pipeline(transaction=False) as pipe:
                for st in lane.streams:
                    await ensure(st, pipe)
                results = await pipe.execute()
        reset: list[SubscriptionType] = []
        for st, (epoch_b, offset) in zip(lane.streams, results, strict=True):
            epoch = as_str(epoch_b)
            if first:
                self._epoch[st], self._last[st] = epoch, int(offset)
                self._last_id[st] = ""
            elif epoch != self._epoch[st]:
                # History lost. Subscribers positioned under the old epoch reconnect (their
                # `since` names it, so they learn it). Deliver the new epoch from its start:
                # clients may already have subscribed under it through Redis's position.
                log.warning("stream %s: epoch changed %s -> %s", st, self._epoch[st], epoch)
                self._epoch[st], self._last[st] = epoch, 0
                self._last_id[st] = ""
                self._fresh.add(st)
                reset.append(st)
        for st in reset:
            self._reset(st, self._epoch[st])
        await self._set_live(lane, True)

    def _reset(self, stream: SubscriptionType, epoch: str | None) -> None:
        self.resets += 1
        if self.on_reset is not None:
            self.on_reset(stream, epoch)

    async def _read_once(self, lane: _Lane) -> bool:
        assert self._reader_redis is not None
        streams: dict[Any, Any] = {stream_keys(st)[1]: f"{self._last[st]}-0" for st in lane.streams}
        resp: Any = await self._reader_redis.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
        if not resp:
            return False
        if self.min_replicas:
            await self._replicated(lane)
        by_key = {stream_keys(st)[1]: st for st in lane.streams}
        for key, entries in resp:
            st = by_key[as_str(key)]
            for entry_id, fields in entries:
                off = int(as_str(entry_id).split("-", 1)[0])
                if as_str(fields[b"e"]) != self._epoch[st]:
                    lane.resync.set()  # a new epoch's entries: resync before going on
                    break
                if off <= self._last[st]:
                    continue
                if off != self._last[st] + 1 and st not in self._fresh:
                    # Trimmed before we read it (we lagged by more than the history).
                    log.warning("stream %s: gap %d..%d", st, self._last[st] + 1, off - 1)
                    self._reset(st, None)
                self._fresh.discard(st)
                self._last[st] = off
                self._last_id[st] = as_str(fields.get(b"n", b""))
                if self._deliver is not None:
                    try:
                        self._deliver(stored_event(st, fields[b"p"], float(fields[b"t"])))
                    except Exception:
                        log.exception("delivering %s offset %d failed", st, off)
        async with self._progress:
            self._progress.notify_all()
        return True

    async def _replicated(self, lane: _Lane) -> None:
        """Wait until ``min_replicas`` replicas hold everything the last read returned
        (a failover to the most up-to-date replica then takes back nothing a client has
        seen). While they do not, delivery waits: publishes fail meanwhile, and what
        they wrote is delivered once the replicas have it. On a cluster the marker is in
        the lane's slot and the ``WAIT`` goes to that slot's master on the same
        connection: the replicas of the lane's shard are counted."""
        reader = self._reader_redis
        assert reader is not None
        warned = False
        while True:
            shard = await self._shard(reader, lane.marker)
            async with reader.pipeline(transaction=False) as pipe:
                pipe.set(lane.marker, b"1", px=60_000)
                pipe.wait(self.min_replicas, WAIT_TIMEOUT_MS, **shard)
                _, acked = await pipe.execute()
            if int(acked) >= self.min_replicas:
                return
            if await self._follow_master(reader):
                # A demoted master keeps no replicas: reconnect, resync, re-read.
                raise RedisConnectionError("the redis master moved")
            if not warned:
                warned = True
                log.warning(
                    "only %d of %d replicas acknowledged for %s; delivery waits for them",
                    int(acked),
                    self.min_replicas,
                    ", ".join(lane.streams),
                )
