"""``redis+cluster://`` URLs: the Redis broker over a Redis Cluster.

::

    redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][/0]

* ``HOST:PORT`` are startup nodes (port 6379 when left out; ``[::1]:7000`` for IPv6):
  any reachable one tells the client the whole cluster (every master and replica and
  the slots each master serves), so two or three suffice. A cluster has one database:
  ``/0`` or nothing.
* ``USER:PASSWORD@`` authenticate to every node, exactly as in a ``redis://`` URL.

The client is redis-py's ``redis.asyncio.cluster.RedisCluster``: it routes each command
to the master of its key's slot and re-learns the topology after a ``MOVED`` reply or a
connection error (a master died, a replica was promoted, slots were moved). TLS
(``rediss+cluster``) is not supported.

Its per-node pools (``max_connections`` each) do not wait: a command that finds every
connection to its node busy fails at once with ``MaxConnectionsError`` (redis-py has no
waiting option for them). :class:`WaitingRedisCluster` adds the wait: at most
``max_connections`` commands and pipelines of the client run at once (each holds at most
one connection per node, so no node's pool runs out); the next waits up to ``timeout``
seconds for one to finish, then fails with redis-py's ``ConnectionError``, as a
``BlockingConnectionPool`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from .urls import split_hosts_url

#: What a connection's closed (None) stream reader or writer is asked for mid-command.
_STREAM_CALLS = frozenset(
    {"writelines", "write", "drain", "read", "readline", "readexactly", "readuntil"}
)

SCHEME = "redis+cluster"
DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse a ``redis+cluster://`` URL (see the module docstring); ValueError names
    what is wrong."""
    if not is_cluster_url(url):
        raise ValueError(f"not a {SCHEME}:// URL: {url!r}")
    parts, username, password, nodes = split_hosts_url(url, "cluster node", DEFAULT_PORT)
    path = [p for p in parts.path.split("/") if p]
    if path not in ([], ["0"]):
        raise ValueError(f"a Redis Cluster has only database 0: {url!r}")
    if parts.query:
        raise ValueError(f"no query options are supported in {url!r}")
    return ClusterURL(nodes=nodes, username=username, password=password)


#: The client whose permit the current task holds: a pipeline that falls back to single
#: commands (after a redirection) runs them under its own permit.
_HOLDING: ContextVar[WaitingRedisCluster | None] = ContextVar("_HOLDING", default=None)


class WaitingRedisCluster(RedisCluster):
    """``RedisCluster`` whose commands and pipelines wait (up to ``timeout`` seconds) for
    one of ``max_connections`` permits instead of failing when a node's pool is busy."""

    def __init__(self, *, timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self.wait_timeout = timeout
        self._permits = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one of the client's permits (re-entrant within a task)."""
        if _HOLDING.get() is self:
            yield
            return
        try:
            async with asyncio.timeout(self.wait_timeout):
                await self._permits.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        token = _HOLDING.set(self)
        try:
            yield
        finally:
            _HOLDING.reset(token)
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]


class _WaitingPipeline(ClusterPipeline):
    cluster_client: WaitingRedisCluster

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        async with self.cluster_client.permit():
            return await super().execute(raise_on_error, allow_redirections)


def cluster_client(
    target: ClusterURL, *, timeout: float, max_connections: int, **kwargs: Any
) -> RedisCluster:
    """A cluster client starting from ``target``'s nodes: at most ``max_connections``
    per node, a command waits up to ``timeout`` seconds for one (``kwargs``: socket
    timeouts, ``retry``: how often a command is retried after a topology refresh)."""
    return WaitingRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        timeout=timeout,
        max_connections=max_connections,
        **kwargs,
    )


def closed_under_command(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's cluster client failing a command whose connection
    another task closed under it: a transient connection error, to be retried like one.

    On ``CLUSTERDOWN``, a slot no master serves, or every few ``MOVED``, redis-py's
    ``RedisCluster`` resets itself (``aclose()``): it disconnects every connection of
    every node, including those other commands of the same client are using (another
    task's, or another node's part of the same pipeline, which runs them concurrently).
    Such a command then writes to or reads from the connection's stream, now None, and
    fails with ``AttributeError: 'NoneType' object has no attribute 'writelines'``
    (redis-py 8.1) or, when it still holds the closed stream, uvloop's ``RuntimeError:
    unable to perform operation on <TCPTransport closed=True ...>; the handler is
    closed``, rather than a ``ConnectionError``. Nothing was sent, or its reply is
    lost: exactly a connection error. Anything else stays a bug and is raised as is.
    """
    if isinstance(exc, AttributeError):
        return exc.obj is None and exc.name in _STREAM_CALLS
    return isinstance(exc, RuntimeError) and str(exc).endswith("the handler is closed")
