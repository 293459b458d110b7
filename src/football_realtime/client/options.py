"""The client's settings, checked once and shared by its parts.

:class:`RealtimeClient` keeps its settings in one :class:`ClientOptions` and shows
them as its own attributes (:class:`Option`, read and written through), so a setting
changed on the client is the one every part reads the next time it acts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, cast, overload
from urllib.parse import urlsplit

from .backoff import Backoff
from .subscription import RecoveryFailed

T = TypeVar("T")

TokenTransport = Literal["query", "header", "auth_message"]


@dataclass(slots=True)
class ClientOptions:
    """Everything given to :class:`RealtimeClient` but the tokens (see docs/clients-python.md)."""

    url: str
    user_id: str | None
    session_id: str | None
    token_transport: TokenTransport
    auto_reconnect: bool
    max_reconnect_attempts: int | None
    backoff: Backoff
    heartbeat_interval: float | None
    heartbeat_timeout: float
    request_timeout: float
    open_timeout: float
    max_queue: int
    max_resync_events: int
    max_message_size: int
    on_recovery_failed: Callable[[RecoveryFailed], object] | None
    connect_kwargs: dict[str, Any]
    compression: bool = True

    @classmethod
    def checked(
        cls,
        url: str,
        user_id: str | None,
        session_id: str | None,
        token_transport: TokenTransport,
        auto_reconnect: bool,
        max_reconnect_attempts: int | None,
        min_reconnect_delay: float,
        max_reconnect_delay: float,
        heartbeat_interval: float | None,
        heartbeat_timeout: float,
        request_timeout: float,
        open_timeout: float,
        max_queue: int,
        max_resync_events: int,
        max_message_size: int,
        on_recovery_failed: Callable[[RecoveryFailed], object] | None,
        connect_kwargs: Mapping[str, Any] | None,
        compression: bool = True,
    ) -> ClientOptions:
        """The options, or ``ValueError`` naming the first one that cannot work."""
        scheme = urlsplit(url).scheme
        if scheme not in ("ws", "wss"):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        if token_transport not in ("query", "header", "auth_message"):
            raise ValueError("token_transport must be 'query', 'header' or 'auth_message'")
        if max_reconnect_attempts is not None and max_reconnect_attempts < 1:
            raise ValueError("max_reconnect_attempts must be >= 1 (or None: unlimited)")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0 (or None: no heartbeats)")
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0 (0: no iterator feeds, handlers only)")
        return cls(
            url=url,
            user_id=user_id,
            session_id=session_id,
            token_transport=token_transport,
            auto_reconnect=auto_reconnect,
            max_reconnect_attempts=max_reconnect_attempts,
            backoff=Backoff(min_reconnect_delay, max_reconnect_delay),
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            request_timeout=request_timeout,
            open_timeout=open_timeout,
            max_queue=max_queue,
            max_resync_events=max_resync_events,
            max_message_size=max_message_size,
            on_recovery_failed=on_recovery_failed,
            connect_kwargs=dict(connect_kwargs or {}),
            compression=compression,
        )


class Configured(Protocol):
    """An object whose settings are in a :class:`ClientOptions`."""

    @property
    def _options(self) -> ClientOptions: ...


class Option(Generic[T]):
    """An attribute of the owner class stored in the owner's ``_options`` under the
    same name: reading and assigning it reads and assigns the shared setting."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Option[T]: ...
    @overload
    def __get__(self, obj: Configured, owner: type | None = None) -> T: ...
    def __get__(self, obj: Configured | None, owner: type | None = None) -> Option[T] | T:
        if obj is None:
            return self
        return cast(T, getattr(obj._options, self._name))

    def __set__(self, obj: Configured, value: T) -> None:
        setattr(obj._options, self._name, value)
