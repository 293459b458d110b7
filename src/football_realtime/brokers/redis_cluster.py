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
from urllib.parse import unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster

SCHEME = "redis+cluster"
DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def _host_port(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"a cluster node without a host in {url!r}")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad cluster node port {port!r} in {url!r}") from None


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse a ``redis+cluster://`` URL (see the module docstring); ValueError names
    what is wrong."""
    if not is_cluster_url(url):
        raise ValueError(f"not a {SCHEME}:// URL: {url!r}")
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    nodes = tuple(_host_port(h.strip(), url) for h in hosts.split(",") if h.strip())
    if not nodes:
        raise ValueError(f"no cluster node address in {url!r}")
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
