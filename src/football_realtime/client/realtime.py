"""The reconnecting client: one WebSocket at a time, subscriptions that outlive it.

:class:`RealtimeClient` is the public face; it builds its parts once, each given
the others it uses, and delegates to them:

* :mod:`.supervisor`: connect, serve each connection (reader, keepalive, setup),
  reconnect with backoff or stop;
* :mod:`.subscribe` and :mod:`.subscription`: the subscriptions kept across
  reconnects and their ``subscribe`` requests, acks and errors;
* :mod:`.resync` and :mod:`.recovery`: events held while resubscribing, released in
  order, each once; when stream positions move; ``recovered: false`` notices;
* :mod:`.requests`: request ids, replies awaited, typed errors;
* :mod:`.dispatch`: handlers and the ``async for`` feeds, on their own task, so a
  handler that awaits a request never blocks the reader that would read its reply;
* :mod:`.auth`: tokens on the handshake, refresh, in-band ``auth``;
* :mod:`.lifecycle`: the client's state, its current connection, why it stopped.

Tasks, all owned by the client and awaited on close: the supervisor, the
dispatcher, and per connection the reader, the keepalive and the setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..core.events import EventType, SubscriptionType
from .auth import Authenticator, TokenProvider
from .backoff import Backoff
from .dispatch import ANY, CLIENT_STATE, RECOVERY_FAILED, Dispatcher, Handler
from .errors import RequestError, RequestTimeout
from .feed import Feed
from .lifecycle import Lifecycle
from .models import ClientState, ClientStats
from .options import ClientOptions, Option, TokenTransport
from .recovery import StreamTracker
from .requests import Lost
from .resync import Resync
from .session import ClientSession, SessionStore
from .subscribe import Subscriber
from .subscription import Item, RecoveryFailed, Subscription, SubscriptionRegistry
from .supervisor import Supervisor

__all__ = [
    "ANY",
    "CLIENT_STATE",
    "RECOVERY_FAILED",
    "ClientStats",
    "Handler",
    "Item",
    "RealtimeClient",
    "Subscription",
    "TokenProvider",
    "TokenTransport",
]


class RealtimeClient:
    """Python client for the football-realtime WebSocket service.

    ::

        async with RealtimeClient("ws://localhost:8000/realtime/ws", user_id="user123") as client:
            await client.subscribe("predictions", match_ids=[1, 2, 3], min_confidence=0.7)
            async for event in client:
                print(event.event_type, event.data)

    It reconnects by itself (full-jitter exponential backoff), resubscribes
    everything with the last seen position of each stream so that the application
    sees every event once and in order, and tells the application with a
    :class:`RecoveryFailed` item when the server cannot replay what was missed.
    See docs/clients-python.md for every option.
    """

    # The options, as attributes (read and written through to ``_options``).
    url = Option[str]()
    user_id = Option[str | None]()
    session_id = Option[str | None]()
    token_transport = Option[TokenTransport]()
    auto_reconnect = Option[bool]()
    max_reconnect_attempts = Option[int | None]()
    backoff = Option[Backoff]()
    heartbeat_interval = Option[float | None]()
    heartbeat_timeout = Option[float]()
    request_timeout = Option[float]()
    open_timeout = Option[float]()
    max_queue = Option[int]()
    max_resync_events = Option[int]()
    max_message_size = Option[int]()
    on_recovery_failed = Option[Callable[[RecoveryFailed], object] | None]()
    connect_kwargs = Option[dict[str, Any]]()
    compression = Option[bool]()

    def __init__(
        self,
        url: str,
        user_id: str | None = None,
        token: str | None = None,
        *,
        session_id: str | None = None,
        session_store: str | os.PathLike[str] | None = None,
        token_provider: TokenProvider | None = None,
        token_transport: TokenTransport = "query",
        auto_reconnect: bool = True,
        max_reconnect_attempts: int | None = None,
        min_reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 5.0,
        heartbeat_interval: float | None = 10.0,
        heartbeat_timeout: float = 5.0,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        max_queue: int = 10_000,
        max_resync_events: int = 200_000,
        max_message_size: int = 4 * 1024 * 1024,
        on_recovery_failed: Callable[[RecoveryFailed], object] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        compression: bool = True,
    ) -> None:
        options = ClientOptions.checked(
            url,
            user_id,
            session_id,
            token_transport,
            auto_reconnect,
            max_reconnect_attempts,
            min_reconnect_delay,
            max_reconnect_delay,
            heartbeat_interval,
            heartbeat_timeout,
            request_timeout,
            open_timeout,
            max_queue,
            max_resync_events,
            max_message_size,
            on_recovery_failed,
            connect_kwargs,
            compression,
        )
        self._options = options
        self.stats = ClientStats()
        self._tracker = StreamTracker()
        self._session = ClientSession(
            session_id,
            SessionStore(session_store) if session_store is not None else None,
            self._tracker,
        )
        self._registry = SubscriptionRegistry()
        self._dispatcher = Dispatcher(
            options, self._registry, self._session.took if self._session.enabled else None
        )
        self._life = Lifecycle(self._dispatcher, self._registry)
        self._resync = Resync(options, self._tracker, self.stats, self._life)
        self._subscriber = Subscriber(
            options, self._registry, self._resync, self._life, self._session
        )
        self._auth = Authenticator(
            options, token, token_provider, self._registry, self._subscriber, self._life
        )
        self._supervisor = Supervisor(
            options,
            self.stats,
            self._life,
            self._dispatcher,
            self._registry,
            self._resync,
            self._subscriber,
            self._auth,
            self._session,
        )
        self._supervisor_task: asyncio.Task[None] | None = None
        self._dispatcher_task: asyncio.Task[None] | None = None
        self._acker_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect (retrying per the reconnect policy) and return once open.

        Raises :class:`ReconnectFailed` or :class:`TerminalCloseError` if it cannot."""
        life = self._life
        life.start()
        self._dispatcher_task = asyncio.create_task(self._dispatch(), name="realtime-dispatch")
        if self._session.enabled:
            self._acker_task = asyncio.create_task(self._session.run(life), name="realtime-acks")
        supervisor = asyncio.create_task(self._supervisor.run(), name="realtime-supervisor")
        self._supervisor_task = supervisor
        opened = asyncio.create_task(life.opened.wait())
        try:
            await asyncio.wait({opened, supervisor}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if not life.opened.is_set():
            await self.close()
            assert life.error is not None
            raise life.error

    async def _dispatch(self) -> None:
        await self._dispatcher.run()
        self._life.mark_closed()

    async def close(self) -> None:
        """Close the connection and stop. Iterators end after what they hold."""
        life = self._life
        if not life.begin_closing():
            if life.started:
                await life.closed.wait()
            return
        if self._session.enabled:
            # The application closes the client after the last item it took.
            feed = self._dispatcher.feed
            if feed is not None:
                feed.taken_last()
            acker = self._acker_task
            if acker is not None:
                acker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acker
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._session.flush(life), self.request_timeout)
        # Cancelling the supervisor closes the connection (1000) on its way out.
        sup = self._supervisor_task
        if sup is not None and not sup.done():
            sup.cancel()
        if sup is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        life.finish(life.error)
        disp = self._dispatcher_task
        if disp is not None and not disp.done():
            if life.error is None:
                disp.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await disp
        self._dispatcher.end_feeds(life.error)
        life.mark_closed()

    async def wait_closed(self) -> None:
        """Wait until the client stops; raises why, unless the application closed it."""
        life = self._life
        if not life.started:
            raise RuntimeError("the client was never connected")
        await life.closed.wait()
        if life.error is not None:
            raise life.error

    @property
    def closed(self) -> bool:
        return self._life.started and self._life.closed.is_set()

    @property
    def state(self) -> ClientState:
        return self._life.state

    @property
    def connection_info(self) -> dict[str, Any]:
        """The ``connection_status`` data of the current connection (its id etc.)."""
        return self._life.connection_info

    @property
    def positions(self) -> dict[str, dict[str, Any]]:
        """Last known ``{"stream": {"epoch", "offset"}}``, as sent in ``since``."""
        return self._tracker.snapshot()

    @property
    def session(self) -> dict[str, Any]:
        """The durable session: ``{"id", "resumed", "expires_in"}`` as the server last
        said (empty without a session), and ``taken``: per stream the newest
        ``{"epoch", "offset"}`` the application took (what is acknowledged)."""
        s = self._session
        if not s.enabled:
            return {}
        return {
            **s.info,
            "id": s.id,
            "taken": {k: {"epoch": e, "offset": o} for k, (e, o) in s.taken.items()},
        }

    @property
    def unclaimed_subscriptions(self) -> list[dict[str, Any]]:
        """Subscriptions the resumed session restored on this connection that no
        :meth:`subscribe` has adopted yet (the server's ``subscription`` objects). They
        keep delivering to the client's iterator; ``await client.request("unsubscribe",
        {"subscription_id": ...})`` removes one."""
        conn = self._life.conn
        return [dict(e["subscription"]) for e in conn.restored] if conn is not None else []

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._registry)

    # -- consuming ---------------------------------------------------------------

    def __aiter__(self) -> Feed[Item]:
        feed = self._dispatcher.feed
        if not self._life.started or feed is None:
            raise RuntimeError(
                "no event feed: connect first, and create the client with max_queue > 0"
            )
        return feed.__aiter__()

    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(item)`` (sync or async) for each ``event_type`` item.

        ``event_type`` is one of the 15 event types, ``"recovery_failed"``,
        ``"client_state"`` (handler gets a :class:`ClientState`), or ``"*"`` (every
        event and notice). Handlers run in arrival order on the dispatcher; an
        exception in one is logged and does not stop the others. Returns a function
        that removes the handler.
        """
        self._dispatcher.on(event_type, handler)
        return lambda: self.off(event_type, handler)

    def off(self, event_type: str, handler: Handler) -> None:
        self._dispatcher.off(event_type, handler)

    # -- requests ----------------------------------------------------------------

    async def subscribe(
        self,
        subscription_type: str | SubscriptionType | None = None,
        *,
        match_ids: Iterable[int] | None = None,
        leagues: Iterable[str] | None = None,
        min_confidence: float | None = None,
        event_types: Iterable[str | EventType] | None = None,
        snapshot: bool = False,
        timeout: float | None = None,
    ) -> Subscription:
        """Subscribe and return once the server acknowledged it.

        The subscription is renewed on every reconnect. Raises :class:`RequestError`
        (typed by code) if the server refuses it, :class:`RequestTimeout` if no
        answer arrives within ``timeout`` (default ``request_timeout``)."""
        self._life.check_usable()
        filters: dict[str, Any] = {}
        if match_ids is not None:
            filters["match_ids"] = list(match_ids)
        if leagues is not None:
            filters["leagues"] = list(leagues)
        if min_confidence is not None:
            filters["min_confidence"] = min_confidence
        if event_types is not None:
            filters["event_types"] = [str(t) for t in event_types]
        st = str(subscription_type) if subscription_type is not None else None
        if st is None and "event_types" not in filters:
            raise ValueError("give a subscription_type, event_types, or both")
        sub = Subscription(self, self._registry.new_id(), st, filters, snapshot, self.max_queue)
        self._registry.add(sub)
        conn = self._life.conn
        if conn is not None and conn.fatal is None:
            notices = self._subscriber.adopt(conn, sub)
            if notices is not None:  # the resumed session restored it already
                for notice in notices:
                    await self._dispatcher.put(notice)
                return sub
            with contextlib.suppress(Lost):
                await self._subscriber.send(conn, sub)
        wait = self.request_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(sub._ready), wait)
        except TimeoutError:
            # A late ack finds the subscription inactive and removes it on the server.
            self._subscriber.drop(sub, None)
            raise RequestTimeout(f"no answer to subscribe within {wait} s") from None
        except BaseException:
            self._subscriber.drop(sub, None)
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription (its iterator ends). Unknown to the server: ignored."""
        if not self._registry.holds(sub):
            return
        self._subscriber.drop(sub, None)
        conn = self._life.conn
        if conn is not None and sub.server_id is not None and sub._gen == conn.gen:
            with contextlib.suppress(RequestError, Lost, RequestTimeout):
                await conn.channel.request(
                    "unsubscribe", {"subscription_id": sub.server_id}, self.request_timeout
                )

    async def join(self, room: str) -> dict[str, Any]:
        """Join a room (rejoined after every reconnect)."""
        result = await self.request("join", {"room": room})
        self._registry.rooms.add(room)
        return result

    async def leave(self, room: str) -> dict[str, Any]:
        self._registry.rooms.discard(room)
        return await self.request("leave", {"room": room})

    async def heartbeat(self) -> dict[str, Any]:
        return await self.request("heartbeat")

    async def get_stats(self) -> dict[str, Any]:
        return await self.request("get_stats")

    async def request(
        self, type_: str, data: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a request and return its ack's ``result``; retried on the next
        connection if the current one drops first. Raises :class:`RequestError` for an
        ``error`` reply and :class:`RequestTimeout` past ``timeout``."""
        self._life.check_usable()
        loop = asyncio.get_running_loop()
        wait = self.request_timeout if timeout is None else timeout
        deadline = loop.time() + wait
        while True:
            conn = await self._life.wait_open(deadline)
            try:
                return await conn.channel.request(type_, data, deadline - loop.time())
            except Lost:
                continue

    async def refresh_token(self) -> str:
        """Fetch a fresh token from ``token_provider`` and use it.

        The next (re)connect presents it; on a live connection it is also sent as
        ``{"type": "auth", "data": {"token": ...}}`` so a server that supports in-band
        authentication extends the connection (a server that does not answers with a
        :class:`RequestError`)."""
        return await self._auth.refresh()
