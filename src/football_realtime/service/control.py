"""Cluster-wide control: disconnect (and ban) a user on every instance, and the per-user
connection limit counted over every instance (docs/scaling.md, Cluster-wide control).

:class:`ClusterControl` does what the service does; where its state lives and how a
command reaches every instance is a :class:`ControlStore`:

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
from ..core.close_codes import CloseCode
from ..core.encoding import server_message
from ..core.events import EventType
from ..stats import ServiceStats
from ..tasks import cancelling, stop_task
from .admission import Refused
from .hub import Hub

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
            self._last_id = _s(newest[0][0]) if newest else "0-0"
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
            user = _s(member)
            reason = reasons.get(member)
            out.append(Ban(user, float(until), _s(reason) if reason is not None else ""))
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
                    self._last_id = _s(newest[0][0]) if newest else "0-0"
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
                    self._last_id = _s(entry_id)
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


class ClusterControl:
    """Disconnects and bans users on every instance; counts their connections over the
    cluster. ``store``: :class:`MemoryControlStore` or :class:`RedisControlStore`."""

    def __init__(
        self, instance_id: str, hub: Hub, store: ControlStore, stats: ServiceStats
    ) -> None:
        self.instance_id = instance_id
        self.hub = hub
        self.store = store
        self.stats = stats
        self.bans: dict[str, Ban] = {}

    async def start(self) -> None:
        for ban in await self.store.start(self.apply):
            self._record(ban)

    async def stop(self) -> None:
        await self.store.stop()

    # -- bans ----------------------------------------------------------------------

    def ban_of(self, user_id: str) -> Ban | None:
        """The user's current ban, or None."""
        ban = self.bans.get(user_id)
        if ban is None:
            return None
        if ban.until <= time.time():
            del self.bans[user_id]
            return None
        return ban

    def banned(self, user_id: str) -> str | None:
        """Why ``user_id`` may not connect now (admission's refusal reason), or None."""
        ban = self.ban_of(user_id)
        if ban is None:
            return None
        left = max(1, round(ban.until - time.time()))
        why = f": {ban.reason}" if ban.reason else ""
        return f"banned by an administrator for {left} more second(s){why}"

    def _record(self, ban: Ban) -> None:
        cur = self.bans.get(ban.user_id)
        if cur is None or cur.until < ban.until or ban.until <= time.time():
            self.bans[ban.user_id] = ban

    # -- commands ------------------------------------------------------------------

    async def disconnect(self, user_id: str, ban_seconds: float, reason: str) -> dict[str, Any]:
        """Close ``user_id``'s connections on every instance (4506), and refuse new ones
        for ``ban_seconds``. Returns what was done on this instance."""
        until = time.time() + ban_seconds if ban_seconds > 0 else None
        command: Command = {
            "op": "disconnect",
            "user_id": user_id,
            "reason": reason,
            "until": until,
            "origin": self.instance_id,
        }
        ban = Ban(user_id, until, reason) if until is not None else None
        closed = self._apply(command)  # at once here; the others hear it from the store
        await self.store.send(command, ban)
        return {"closed_here": closed, "banned_until": until}

    def apply(self, command: Command) -> None:
        """A command from the control channel (every instance's, this one's included)."""
        self._apply(command)

    def _apply(self, command: Command) -> int:
        user_id = command.get("user_id")
        if not isinstance(user_id, str):
            return 0
        until = command.get("until")
        reason = command.get("reason")
        reason = reason if isinstance(reason, str) else ""
        if isinstance(until, int | float):
            self._record(Ban(user_id, float(until), reason))
        if command.get("op") != "disconnect":
            return 0
        return self._close_user(user_id, reason)

    def _close_user(self, user_id: str, reason: str) -> int:
        hub = self.hub
        closed = 0
        why = "disconnected by an administrator" + (f": {reason}" if reason else "")
        for cid in list(hub.user_connections.get(user_id, ())):
            conn = hub.connections.get(cid)
            if conn is None or conn.closing:
                continue
            hub.send_payload(
                conn,
                server_message(
                    EventType.CONNECTION_STATUS,
                    {
                        "status": "closing",
                        "reason": why,
                        "instance_id": self.instance_id,
                        "reconnect": False,
                    },
                ),
            )
            conn.close(CloseCode.DISCONNECTED_BY_ADMIN, why[:120])
            closed += 1
        if closed:
            log.info("disconnected user %s on this instance (%d connection(s))", user_id, closed)
        return closed

    # -- per-user connections -------------------------------------------------------

    async def reserve(self, user_id: str, conn_id: str, limit: int) -> None:
        """Count a new connection of ``user_id`` over the cluster. Raises
        :class:`Refused` when the user already holds ``limit`` connections."""
        if not await self.store.reserve(user_id, conn_id, limit):
            self.stats.errors_by_code["connection_limit"] += 1
            log.info("refused connection: user %s is at its cluster-wide limit", user_id)
            raise Refused(
                CloseCode.CONNECTION_LIMIT,
                f"connection limit: at most {limit} connections per user (on every instance)",
                "limit_exceeded",
            )

    def release(self, user_id: str, conn_id: str) -> None:
        self.store.release(user_id, conn_id)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


__all__ = [
    "Ban",
    "ClusterControl",
    "ControlStore",
    "MemoryControlStore",
    "RedisControlStore",
]
