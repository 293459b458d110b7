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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

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


def cluster_client(target: ClusterURL, **kwargs: Any) -> RedisCluster:
    """A cluster client starting from ``target``'s nodes (``kwargs``: socket timeouts,
    ``retry``: how often a command is retried after a topology refresh)."""
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
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
