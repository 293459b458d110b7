"""Where cluster-wide control keeps its state and how a command reaches every instance
(docs/scaling.md, Cluster-wide control): :class:`ControlStore` and its two
implementations. :mod:`.control` (:class:`~.control.ClusterControl`) is what the service
does with them.

* :class:`MemoryControlStore` (memory broker): the cluster is this instance; a command is
  applied here, bans live in this process, the per-user limit counts this instance
  (admission's own count).
* :class:`RedisControlStore` (any broker that shares its Redis client, brokers.base
  ``SharesRedis``), keys:

  * ``{frt:control}:log``   Redis Stream of commands (field ``c``: JSON), capped at
    :data:`LOG_MAX` entries. Every instance reads it with ``XREAD BLOCK`` in one task,
    so a disconnect reaches every instance within milliseconds.
  * ``{frt:control}:bans``  sorted set user id -> ban end (unix seconds), and
    ``{frt:control}:reasons`` hash user id -> reason: the current bans, read by an
    instance when it starts (and after an outage), so a new instance knows them. Both
    expire with the longest ban; ended bans are pruned on every write.
  * ``frt:uc:{<user id>}``  sorted set connection id -> expiry (unix seconds): the user's
    connections on every instance. A connection is added atomically with the limit
    check (one script on one key), its expiry refreshed every registry heartbeat by the
    instance that holds it, removed when it closes; a crashed instance's entries expire
    after three heartbeats. The handshakes that reserve at once share one pipeline of
    those scripts (one connection, one round trip for a burst: :data:`RESERVE_BATCH`).

  Every command touches one key, or keys sharing the ``{frt:control}`` hash tag, so it
  also runs on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ..brokers.redis_cluster import closed_under_command
from ..brokers.redis_layout import as_str
from ..tasks import cancelling, stop_task

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

log = logging.getLogger("football_realtime.control")

CONTROL = "{frt:control}"
LOG = f"{CONTROL}:log"
BANS = f"{CONTROL}:bans"
REASONS = f"{CONTROL}:reasons"
#: Commands kept in the control stream (approximately); readers need only the newest.
LOG_MAX = 1000
READ_BLOCK_MS = 1000
#: The longest ban (30 days).
MAX_BAN_SECONDS = 30 * 24 * 3600
#: At most this many per-user reservations (handshakes) share one pipeline.
RESERVE_BATCH = 256
#: What a store command may raise (a cluster client also raises RedisClusterException).
_ERRORS = (RedisError, OSError, RedisClusterException)


def _unavailable(exc: BaseException) -> bool:
    """Whether a store command failed because Redis is out of reach: one of
    :data:`_ERRORS`, or the cluster client closing the connection under the command when
    another command reset it (brokers/redis_cluster.py ``closed_under_command``)."""
    return isinstance(exc, _ERRORS) or closed_under_command(exc)


Command = dict[str, Any]


def user_conns_key(user_id: str) -> str:
    return f"frt:uc:{{{user_id}}}"


@dataclass(frozen=True, slots=True)
class Ban:
    user_id: str
    until: float  # unix seconds
    reason: str


class ControlStore(Protocol):
    """Where bans and per-user connection counts live, and how commands reach every
    instance (this one included)."""

    async def start(self, on_command: Callable[[Command], None]) -> list[Ban]:
        """Begin handing every instance's commands to ``on_command``; the current bans."""
        ...

    async def stop(self) -> None: ...

    async def send(self, command: Command, ban: Ban | None) -> None:
        """Record ``ban`` (if any) and deliver ``command`` to every instance."""
        ...

    async def reserve(self, user_id: str, conn_id: str, limit: int) -> bool:
        """Count ``conn_id`` for ``user_id`` unless the user already holds ``limit``
        connections over the cluster (False)."""
        ...

    def release(self, user_id: str, conn_id: str) -> None:
        """``conn_id`` closed (never waits)."""
        ...


class MemoryControlStore:
    """One instance: commands are applied here; admission counts this instance."""

    def __init__(self) -> None:
        self._on_command: Callable[[Command], None] | None = None

    async def start(self, on_command: Callable[[Command], None]) -> list[Ban]:
        self._on_command = on_command
        return []

    async def stop(self) -> None:
        self._on_command = None

    async def send(self, command: Command, ban: Ban | None) -> None:
        if self._on_command is not None:
            self._on_command(command)

    async def reserve(self, user_id: str, conn_id: str, limit: int) -> bool:
        return True

    def release(self, user_id: str, conn_id: str) -> None:
        return None


_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisControlStore:
    """Commands over a Redis Stream, bans and per-user connections in Redis (module
    docstring). ``held``: this instance's user -> connection ids (the hub's table),
    whose entries it refreshes every ``heartbeat_interval`` seconds."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        held: Mapping[str, Set[str]],
        heartbeat_interval: float,
    ) -> None:
        self.redis = redis
        self.held = held
        self.interval = heartbeat_interval
        self.ttl = max(1, round(heartbeat_interval * 3))
        self._reserve = redis.register_script(_RESERVE)
        self._reserving: list[tuple[str, str, int, asyncio.Future[bool]]] = []
        self._reserve_wake = asyncio.Event()
        self._on_command: Callable[[Command], None] | None = None
        self._released: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_id = "$"
        self.available = True

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, on_command: Callable[[Command], None]) -> list[Ban]:
        self._on_command = on_command
        bans: list[Ban] = []
        try:
            newest = await self.redis.xrevrange(LOG, count=1)
            self._last_id = as_str(newest[0][0]) if newest else "0-0"
            bans = await self._bans()
        except Exception as exc:
            if not _unavailable(exc):
                raise
            # Start from the newest command once Redis answers (never replay old ones:
            # they would close connections opened since); the bans are loaded then.
            log.warning("control channel unavailable at start: %s", exc)
            self._last_id = ""
            self.available = False
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="control-reader"),
            asyncio.create_task(self._refresh_loop(), name="control-refresh"),
            asyncio.create_task(self._reserve_loop(), name="control-reserve"),
        ]
        return bans

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await stop_task(task)
        self._answer(self._reserving, None)  # counted here alone, as when Redis is down
        self._reserving = []
        self._on_command = None

    async def _bans(self) -> list[Ban]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as p:
            p.zrangebyscore(BANS, now, "+inf", withscores=True)
            p.hgetall(REASONS)
            entries, reasons = await p.execute()
        out = []
        for member, until in entries:
            user = as_str(member)
            reason = reasons.get(member)
            out.append(Ban(user, float(until), as_str(reason) if reason is not None else ""))
        return out

    # -- commands ------------------------------------------------------------------

    async def send(self, command: Command, ban: Ban | None) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=True) as p:
            if ban is not None:
                p.zremrangebyscore(BANS, "-inf", now)
                p.zadd(BANS, {ban.user_id: ban.until}, gt=True)
                p.hset(REASONS, ban.user_id, ban.reason)
                keep = max(1, int(ban.until - now) + 1)
                p.expire(BANS, keep, gt=True)
                p.expire(REASONS, keep, gt=True)
                # EXPIRE GT does not set a TTL on a key without one.
                p.expire(BANS, keep, nx=True)
                p.expire(REASONS, keep, nx=True)
            p.xadd(LOG, {"c": orjson.dumps(command)}, maxlen=LOG_MAX, approximate=True)
            await p.execute()

    async def _read_loop(self) -> None:
        reload = False
        while True:
            try:
                if not self._last_id:
                    newest = await self.redis.xrevrange(LOG, count=1)
                    self._last_id = as_str(newest[0][0]) if newest else "0-0"
                    reload = True
                if reload:
                    for ban in await self._bans():
                        self._apply(
                            {
                                "op": "ban",
                                "user_id": ban.user_id,
                                "until": ban.until,
                                "reason": ban.reason,
                            }
                        )
                    reload = False
                resp: Any = await self.redis.xread({LOG: self._last_id}, block=READ_BLOCK_MS)
                if not self.available:
                    log.info("control channel reachable again")
                self.available = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                if not _unavailable(exc):
                    # A bug, not an outage: logged, and the reader carries on (a dead
                    # reader would silently stop every disconnect and ban reaching here).
                    log.exception("control reader failed; retrying")
                elif self.available:
                    log.warning("control channel unavailable: %s", exc)
                self.available = False
                reload = True
                await asyncio.sleep(min(self.interval, 1.0))
                continue
            for _stream, entries in resp or ():
                for entry_id, fields in entries:
                    self._last_id = as_str(entry_id)
                    raw = fields.get(b"c") if isinstance(fields, dict) else None
                    if raw is None:
                        continue
                    try:
                        command = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        log.warning("ignoring a malformed control command %r", raw[:200])
                        continue
                    self._apply(command)

    def _apply(self, command: Command) -> None:
        if self._on_command is not None:
            try:
                self._on_command(command)
            except Exception:
                log.exception("control command failed: %r", command)

    # -- per-user connections -------------------------------------------------------

    async def reserve(self, user_id: str, conn_id: str, limit: int) -> bool:
        if not self._tasks:  # not started (or stopped): this instance's count alone
            return True
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._reserving.append((user_id, conn_id, limit, done))
        self._reserve_wake.set()
        return await done

    async def _reserve_loop(self) -> None:
        """Run the pending reservations, up to RESERVE_BATCH per pipeline (one connection
        and one round trip for all the handshakes of a burst)."""
        while True:
            await self._reserve_wake.wait()
            self._reserve_wake.clear()
            while self._reserving:
                batch = self._reserving[:RESERVE_BATCH]
                del self._reserving[:RESERVE_BATCH]
                batch = [r for r in batch if not r[3].done()]  # its handshake gave up
                if not batch:
                    continue
                try:
                    self._answer(batch, await self._reserve_many(batch))
                except asyncio.CancelledError:
                    self._answer(batch, None)
                    raise
                except Exception as exc:
                    self._answer(batch, None)
                    if cancelling():
                        raise asyncio.CancelledError from exc
                    # Counted by this instance's admission alone until Redis answers
                    # again (the heartbeat then registers every connection held here).
                    # Any other error is a bug, logged: the loop must not die with
                    # handshakes waiting on it.
                    if _unavailable(exc):
                        log.warning("cluster-wide connection count unavailable: %s", exc)
                    else:
                        log.exception("cluster-wide connection count failed")

    async def _reserve_many(
        self, batch: list[tuple[str, str, int, asyncio.Future[bool]]]
    ) -> list[bool]:
        """One ``_RESERVE`` per entry, in one pipeline (the script is loaded again on a
        server that lost it: a failover, a restart)."""
        for attempt in (1, 2):
            now = time.time()
            async with self.redis.pipeline(transaction=False) as p:
                for user_id, conn_id, limit, _ in batch:
                    # (execute_command: redis-py's cluster pipeline refuses ``evalsha()``;
                    # this script touches one key.)
                    p.execute_command(
                        "EVALSHA",
                        self._reserve.sha,
                        1,
                        user_conns_key(user_id),
                        now,
                        now + self.ttl,
                        conn_id,
                        limit,
                        self.ttl,
                    )
                replies = await p.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                await self.redis.script_load(_RESERVE)
                continue
            failed = [r for r in replies if isinstance(r, Exception)]
            if failed:
                log.warning("cluster-wide connection count unavailable: %s", failed[0])
            # A reservation Redis refused to run is counted by this instance alone.
            return [True if isinstance(r, Exception) else bool(r) for r in replies]
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _answer(
        batch: list[tuple[str, str, int, asyncio.Future[bool]]], oks: list[bool] | None
    ) -> None:
        """Settle each reservation's future: its reply, or True (None: Redis did not
        answer, so this instance's count decides)."""
        for i, (_, _, _, done) in enumerate(batch):
            if not done.done():
                done.set_result(True if oks is None else oks[i])

    def release(self, user_id: str, conn_id: str) -> None:
        self._released.append((user_id, conn_id))
        self._wake.set()

    async def _refresh_loop(self) -> None:
        next_beat = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            beat = time.monotonic() >= next_beat
            released, self._released = self._released, []
            try:
                await self._flush(released, beat)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not _unavailable(exc):
                    raise
                if cancelling():
                    raise asyncio.CancelledError from exc
                log.debug("control refresh failed: %s", exc)
                # Closed connections' entries expire on their own; no retry needed.
                await asyncio.sleep(min(self.interval, 1.0))
                continue
            if beat:
                next_beat = time.monotonic() + self.interval

    async def _flush(self, released: list[tuple[str, str]], beat: bool) -> None:
        if not released and not beat:
            return
        now = time.time()
        async with self.redis.pipeline(transaction=False) as p:
            for user_id, conn_id in released:
                p.zrem(user_conns_key(user_id), conn_id)
            if beat:
                for user_id, ids in list(self.held.items()):
                    if ids:
                        key = user_conns_key(user_id)
                        p.zadd(key, dict.fromkeys(ids, now + self.ttl))
                        p.expire(key, self.ttl)
            await p.execute()


__all__ = [
    "MAX_BAN_SECONDS",
    "Ban",
    "Command",
    "ControlStore",
    "MemoryControlStore",
    "RedisControlStore",
    "user_conns_key",
]
