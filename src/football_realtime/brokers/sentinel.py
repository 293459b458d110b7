"""``redis+sentinel://`` URLs: find the Redis master through Redis Sentinel.

::

    redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]
                     [?sentinel_username=U&sentinel_password=P]

* ``HOST:PORT`` are the sentinels (port 26379 when left out; ``[::1]:26379`` for IPv6).
* ``MASTER_NAME`` is the name the sentinels monitor (``sentinel monitor NAME ...``).
* ``USER:PASSWORD@`` authenticate to the Redis master (and replicas), exactly as in a
  ``redis://`` URL. They are **not** sent to the sentinels: sentinels usually run without
  ``requirepass``; when yours have one, give it as ``sentinel_password`` (and
  ``sentinel_username`` for an ACL user) in the query.

Every connection asks the sentinels for the current master when it is opened (redis-py's
``redis.asyncio.sentinel.Sentinel.master_for``), so after a failover the next connection
goes to the promoted replica. TLS (``rediss+sentinel``) is not supported.

The client's pool is :class:`BlockingSentinelConnectionPool`: redis-py's sentinel pool
(``SentinelConnectionPool``, which finds the master) with the waiting of its
``BlockingConnectionPool`` (at most ``max_connections``; a command finding them all busy
waits up to ``timeout`` seconds), given to ``master_for`` as its public
``connection_pool_class``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from .urls import split_hosts_url

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a ``redis+sentinel://`` URL (see the module docstring); ValueError names
    what is wrong."""
    if not is_sentinel_url(url):
        raise ValueError(f"not a {SCHEME}:// URL: {url!r}")
    parts, username, password, sentinels = split_hosts_url(url, "sentinel", DEFAULT_SENTINEL_PORT)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"expected /MASTER_NAME or /MASTER_NAME/DB after the sentinels: {url!r}")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"bad database number {path[1]!r} in {url!r}") from None
    query = parse_qs(parts.query)
    return SentinelURL(
        sentinels=sentinels,
        master_name=unquote(path[0]),
        db=db,
        username=username,
        password=password,
        sentinel_username=query.get("sentinel_username", [None])[0],
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def sentinel_manager(target: SentinelURL, *, timeout: float) -> Sentinel:
    """The sentinels of ``target``; each asked in turn (a dead one costs one refused
    connection or ``timeout``)."""
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    return Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs
    )


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """A sentinel pool that waits for a free connection (``BlockingConnectionPool``'s
    ``get_connection`` and ``release``) instead of failing with ``Too many connections``.
    ``max_connections`` and ``timeout`` as for ``BlockingConnectionPool``."""


def master_client(manager: Sentinel, target: SentinelURL, **kwargs: Any) -> Redis:
    """A client whose connections go to the master the sentinels currently name
    (``kwargs``: ``max_connections``, ``timeout`` of its waiting pool, socket timeouts,
    ``retry``)."""
    client: Redis = manager.master_for(
        target.master_name,
        redis_class=Redis,
        connection_pool_class=BlockingSentinelConnectionPool,
        db=target.db,
        username=target.username,
        password=target.password,
        **kwargs,
    )
    return client
