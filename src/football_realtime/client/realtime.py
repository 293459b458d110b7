"""The reconnecting client: one WebSocket at a time, subscriptions that outlive it.

Tasks, all owned by the client and awaited on close:

* the supervisor (``_run``) opens connections, serves each until it ends, and
  decides: reconnect with backoff, or stop (terminal close code, attempts used up,
  application close);
* per connection, a reader (socket -> bookkeeping -> dispatch queue), a keepalive
  (heartbeats out, dead-connection watchdog) and the setup (auth, resubscribe with
  ``since``, rejoin rooms, then a heartbeat as a barrier);
* the dispatcher (dispatch queue -> handlers and iterator feeds, in order), so a
  handler that awaits a request never blocks the reader that would read its reply.

Ordering and duplicates are decided in the reader, in arrival order, by
:mod:`.recovery`; the dispatcher only delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..core.close_codes import CloseCode, should_reconnect
from ..core.events import EventType, Payload, SubscriptionType
from .backoff import Backoff
from .errors import (
    ClientClosed,
    RealtimeClientError,
    ReconnectFailed,
    RequestError,
    RequestTimeout,
    TerminalCloseError,
    request_error,
)
from .feed import Feed
from .models import ClientState, ClientStats, Event, parse_event
from .recovery import ResyncBuffer, StreamTracker, positions
from .subscription import Item, RecoveryFailed, Subscription

log = logging.getLogger("football_realtime.client")

Handler: TypeAlias = Callable[[Any], object]
TokenProvider: TypeAlias = Callable[[], "str | Awaitable[str]"]
TokenTransport = Literal["query", "header", "auth_message"]

#: Pseudo event types for :meth:`RealtimeClient.on` besides the 15 event types.
RECOVERY_FAILED = "recovery_failed"
CLIENT_STATE = "client_state"
ANY = "*"

# HTTP answers to the handshake that retrying unchanged cannot fix.
_TERMINAL_HTTP = frozenset({400, 404, 405, 426})
_AUTH_HTTP = frozenset({401, 403})


class _Lost(RealtimeClientError):
    """The connection a request was sent on ended before its reply."""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    type: str
    on_ack: Callable[[dict[str, Any]], list[_Delivery]] | None = None
    on_error: Callable[[RequestError], list[_Delivery]] | None = None


# An item; for snapshot events the subscription that asked for it; and whether it is
# for that subscription only (state the application has already seen elsewhere).
_Delivery: TypeAlias = "tuple[Item, Subscription | None, bool]"


@dataclass(slots=True)
class _SnapshotWindow:
    sub: Subscription
    offsets: dict[str, int]


@dataclass(eq=False, slots=True)
class _Conn:
    ws: ClientConnection
    gen: int
    last_rx: float
    pending: dict[int, _Pending] = field(default_factory=dict)
    resync: ResyncBuffer[_Delivery] | None = None
    snapshot: _SnapshotWindow | None = None
    blocked: bool = False
    established: bool = False
    close_code: int = CloseCode.ABNORMAL
    close_reason: str = ""
    fatal: BaseException | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Resubscription: subscriptions not yet acked, and whether a barrier reply came
    # after every ack sent so far (then all replays are in).
    resync_subs: set[str] = field(default_factory=set)
    barrier_passed: bool = False
    # Stream positions from acks, applied when safe: at the end of the resync (acks
    # with `since`: their replay covers everything up to them), or one heartbeat
    # round later (plain acks, whose offset may be ahead of delivery).
    resync_advance: dict[str, tuple[str, int]] = field(default_factory=dict)
    advance: dict[str, tuple[str, int]] = field(default_factory=dict)
    advance_ready: dict[str, tuple[str, int]] = field(default_factory=dict)


async def _resolve(value: str | Awaitable[str]) -> str:
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str):
        raise TypeError("the token provider must return a string")
    return value


def _with_query(url: str, params: Mapping[str, str | None]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


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

    def __init__(
        self,
        url: str,
        user_id: str | None = None,
        token: str | None = None,
        *,
        session_id: str | None = None,
        token_provider: TokenProvider | None = None,
        token_transport: TokenTransport = "query",
        auto_reconnect: bool = True,
        max_reconnect_attempts: int | None = None,
        min_reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 20.0,
        heartbeat_interval: float | None = 30.0,
        heartbeat_timeout: float = 10.0,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        max_queue: int = 10_000,
        max_resync_events: int = 200_000,
        max_message_size: int = 4 * 1024 * 1024,
        on_recovery_failed: Callable[[RecoveryFailed], object] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
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
        self.url = url
        self.user_id = user_id
        self.session_id = session_id
        self.token_transport: TokenTransport = token_transport
        self.auto_reconnect = auto_reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.backoff = Backoff(min_reconnect_delay, max_reconnect_delay)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.max_queue = max_queue
        self.max_resync_events = max_resync_events
        self.max_message_size = max_message_size
        self.on_recovery_failed = on_recovery_failed
        self.connect_kwargs = dict(connect_kwargs or {})
        self._token = token
        self._token_provider = token_provider

        self.state = ClientState.CLOSED
        self.stats = ClientStats()
        #: The ``connection_status`` data of the current connection (its id etc.).
        self.connection_info: dict[str, Any] = {}
        self._tracker = StreamTracker()
        self._subs: dict[str, Subscription] = {}
        self._rooms: set[str] = set()
        self._handlers: dict[str, list[Handler]] = {}
        self._warned: set[str] = set()
        self._sub_ids = itertools.count(1)
        self._req_ids = itertools.count(1)
        self._gens = itertools.count(1)
        self._conn: _Conn | None = None
        self._feed: Feed[Item] | None = None
        self._dispatch_q: asyncio.Queue[_Delivery | ClientState | None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._open_event: asyncio.Event | None = None
        self._established: asyncio.Event | None = None
        self._closed_event: asyncio.Event | None = None
        self._closing = False
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect (retrying per the reconnect policy) and return once open.

        Raises :class:`ReconnectFailed` or :class:`TerminalCloseError` if it cannot."""
        if self._supervisor is not None:
            raise RuntimeError("connect() was already called on this client")
        self._dispatch_q = asyncio.Queue(maxsize=1024)
        if self.max_queue > 0:
            self._feed = Feed(self.max_queue, "client event feed")
        self._open_event = asyncio.Event()
        self._established = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="realtime-dispatch")
        self._supervisor = asyncio.create_task(self._run(), name="realtime-supervisor")
        opened = asyncio.create_task(self._open_event.wait())
        try:
            await asyncio.wait({opened, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if not self._open_event.is_set():
            await self.close()
            assert self._error is not None
            raise self._error

    async def close(self) -> None:
        """Close the connection and stop. Iterators end after what they hold."""
        if self._closing:
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self._closing = True
        # Cancelling the supervisor closes the connection (1000) on its way out.
        sup = self._supervisor
        if sup is not None and not sup.done():
            sup.cancel()
        if sup is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        self._finish(self._error)
        disp = self._dispatcher
        if disp is not None and not disp.done():
            if self._error is None:
                disp.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await disp
        self._end_feeds(self._error)
        if self._closed_event is not None:
            self._closed_event.set()

    async def wait_closed(self) -> None:
        """Wait until the client stops; raises why, unless the application closed it."""
        if self._closed_event is None:
            raise RuntimeError("the client was never connected")
        await self._closed_event.wait()
        if self._error is not None:
            raise self._error

    @property
    def closed(self) -> bool:
        return self._closed_event is not None and self._closed_event.is_set()

    @property
    def positions(self) -> dict[str, dict[str, Any]]:
        """Last known ``{"stream": {"epoch", "offset"}}``, as sent in ``since``."""
        return self._tracker.snapshot()

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    # -- consuming ---------------------------------------------------------------

    def __aiter__(self) -> Feed[Item]:
        if self._feed is None:
            raise RuntimeError(
                "no event feed: connect first, and create the client with max_queue > 0"
            )
        return self._feed.__aiter__()

    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(item)`` (sync or async) for each ``event_type`` item.

        ``event_type`` is one of the 15 event types, ``"recovery_failed"``,
        ``"client_state"`` (handler gets a :class:`ClientState`), or ``"*"`` (every
        event and notice). Handlers run in arrival order on the dispatcher; an
        exception in one is logged and does not stop the others. Returns a function
        that removes the handler.
        """
        self._handlers.setdefault(str(event_type), []).append(handler)
        return lambda: self.off(event_type, handler)

    def off(self, event_type: str, handler: Handler) -> None:
        hs = self._handlers.get(str(event_type))
        if hs is not None and handler in hs:
            hs.remove(handler)

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
        self._check_usable()
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
        sub = Subscription(self, f"s{next(self._sub_ids)}", st, filters, snapshot, self.max_queue)
        self._subs[sub.id] = sub
        conn = self._conn
        if conn is not None and conn.fatal is None:
            with contextlib.suppress(_Lost):
                await self._send_subscribe(conn, sub)
        wait = self.request_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(sub._ready), wait)
        except TimeoutError:
            # A late ack finds the subscription inactive and removes it on the server.
            self._drop_sub(sub, None)
            raise RequestTimeout(f"no answer to subscribe within {wait} s") from None
        except BaseException:
            self._drop_sub(sub, None)
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription (its iterator ends). Unknown to the server: ignored."""
        if self._subs.get(sub.id) is not sub:
            return
        self._drop_sub(sub, None)
        conn = self._conn
        if conn is not None and sub.server_id is not None and sub._gen == conn.gen:
            with contextlib.suppress(RequestError, _Lost, RequestTimeout):
                await self._request_on(
                    conn, "unsubscribe", {"subscription_id": sub.server_id}, self.request_timeout
                )

    async def join(self, room: str) -> dict[str, Any]:
        """Join a room (rejoined after every reconnect)."""
        result = await self.request("join", {"room": room})
        self._rooms.add(room)
        return result

    async def leave(self, room: str) -> dict[str, Any]:
        self._rooms.discard(room)
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
        self._check_usable()
        loop = asyncio.get_running_loop()
        wait = self.request_timeout if timeout is None else timeout
        deadline = loop.time() + wait
        while True:
            conn = await self._wait_open(deadline)
            try:
                return await self._request_on(conn, type_, data, deadline - loop.time())
            except _Lost:
                continue

    async def refresh_token(self) -> str:
        """Fetch a fresh token from ``token_provider`` and use it.

        The next (re)connect presents it; on a live connection it is also sent as
        ``{"type": "auth", "data": {"token": ...}}`` so a server that supports in-band
        authentication extends the connection (a server that does not answers with a
        :class:`RequestError`)."""
        if self._token_provider is None:
            raise RuntimeError("no token_provider was given")
        token = await _resolve(self._token_provider())
        self._token = token
        conn = self._conn
        if conn is not None and conn.established:
            await self._authenticate(conn, token)
        return token

    async def _authenticate(self, conn: _Conn, token: str) -> dict[str, Any]:
        fut = await self._send(
            conn, "auth", {"token": token}, on_ack=lambda r: self._on_auth_ack(conn, r)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.request_timeout)
        except TimeoutError:
            raise RequestTimeout("no reply to auth within the timeout") from None

    def _on_auth_ack(self, conn: _Conn, result: dict[str, Any]) -> list[_Delivery]:
        # A refresh may change the tier: the server lists the subscriptions it removed
        # and the narrowed ones; the client follows so routing matches delivery.
        removed = result.get("removed")
        if isinstance(removed, list):
            gone = {r.get("subscription_id") for r in removed if isinstance(r, dict)}
            for sub in list(self._subs.values()):
                if sub._gen == conn.gen and sub.server_id in gone:
                    log.warning("subscription %s removed by the server after auth", sub.id)
                    self._drop_sub(
                        sub,
                        request_error(
                            "forbidden", "removed: the token's tier does not allow it", "auth"
                        ),
                    )
        current = result.get("subscriptions")
        if isinstance(current, list):
            by_server_id = {s.server_id: s for s in self._subs.values() if s._gen == conn.gen}
            for desc in current:
                if isinstance(desc, dict):
                    found = by_server_id.get(desc.get("subscription_id"))
                    if found is not None:
                        found._apply_ack({**desc, "streams": dict.fromkeys(found.streams)})
        return []

    # -- internals: supervisor ---------------------------------------------------

    def _check_usable(self) -> None:
        if self._supervisor is None:
            raise RuntimeError("connect first (async with RealtimeClient(...) as client)")
        if self._closing or self.closed:
            raise self._error or ClientClosed("the client is closed")

    async def _fetch_token(self) -> str | None:
        if self._token_provider is not None:
            self._token = await _resolve(self._token_provider())
        return self._token

    async def _open(self) -> ClientConnection:
        token = await self._fetch_token()
        params: dict[str, str | None] = {"user_id": self.user_id, "session_id": self.session_id}
        headers: dict[str, str] = {}
        if token is not None and self.token_transport == "query":
            params["token"] = token
        elif token is not None and self.token_transport == "header":
            headers["Authorization"] = f"Bearer {token}"
        kw: dict[str, Any] = {
            "open_timeout": self.open_timeout,
            "ping_interval": None,  # liveness is our heartbeat's job
            "compression": None,
            "max_size": self.max_message_size,
            "close_timeout": self.heartbeat_timeout,
            "additional_headers": headers or None,
        }
        kw.update(self.connect_kwargs)
        return await connect(_with_query(self.url, params), **kw)

    def _set_state(self, state: ClientState) -> None:
        if state is self.state:
            return
        self.state = state
        if self._dispatch_q is not None and self._handlers.get(CLIENT_STATE):
            with contextlib.suppress(asyncio.QueueFull):
                self._dispatch_q.put_nowait(state)

    async def _run(self) -> None:
        failures = 0
        last_error: BaseException | None = None
        first = True
        quick = False
        try:
            while True:
                if not first:
                    if self.max_reconnect_attempts is not None and (
                        failures >= self.max_reconnect_attempts
                    ):
                        raise ReconnectFailed(failures, last_error)
                    self._set_state(ClientState.RECONNECTING)
                    if quick:  # 1012: another instance answers at once; spread a little
                        await asyncio.sleep(random.random() * self.backoff.min_delay)
                    else:
                        await asyncio.sleep(self.backoff.delay(max(failures, 1)))
                    quick = False
                    self.stats.reconnects += 1
                first = False
                if self.state is not ClientState.RECONNECTING:
                    self._set_state(ClientState.CONNECTING)
                try:
                    ws = await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # network, handshake, token provider
                    failures += 1
                    last_error = exc
                    status = exc.response.status_code if isinstance(exc, InvalidStatus) else 0
                    log.info("connection attempt %d failed: %s", failures, exc)
                    if status in _TERMINAL_HTTP or (
                        status in _AUTH_HTTP and self._token_provider is None
                    ):
                        raise TerminalCloseError(status, f"handshake refused: {exc}") from None
                    if not self.auto_reconnect:
                        raise ReconnectFailed(failures, exc) from None
                    continue
                conn = await self._serve(ws)
                if self._closing:
                    return
                if conn.fatal is not None:
                    raise conn.fatal
                if conn.established:
                    failures = 0
                    quick = conn.close_code == CloseCode.SERVICE_RESTART
                else:
                    failures += 1
                    last_error = ConnectionError(
                        f"closed during setup with {conn.close_code} {conn.close_reason!r}"
                    )
                code = conn.close_code
                if not should_reconnect(code) and not (
                    code == CloseCode.TOKEN_EXPIRED and self._token_provider is not None
                ):
                    raise TerminalCloseError(code, conn.close_reason)
                if not self.auto_reconnect:
                    raise ReconnectFailed(max(failures, 1), last_error)
                log.info("connection closed (%s %r); reconnecting", code, conn.close_reason)
        except asyncio.CancelledError:
            raise
        except RealtimeClientError as exc:
            self._error = exc
            self._finish(exc)
            if self._dispatch_q is not None:
                await self._dispatch_q.put(None)
        except Exception as exc:  # a bug: end the client loudly rather than hang
            log.exception("realtime client supervisor failed")
            self._error = ClientClosed(f"client failed: {exc!r}")
            self._finish(self._error)
            if self._dispatch_q is not None:
                await self._dispatch_q.put(None)

    def _finish(self, exc: BaseException | None) -> None:
        self._set_state(ClientState.CLOSED)
        err = exc or ClientClosed("the client is closed")
        for sub in self._subs.values():
            if not sub._ready.done():
                sub._ready.set_exception(err)
                sub._ready.exception()  # retrieved: subscribe() may be gone
        if self._established is not None:
            self._established.set()  # wake request() waiters so they see the end

    def _end_feeds(self, exc: BaseException | None) -> None:
        if self._feed is not None:
            self._feed.end(exc)
        for sub in self._subs.values():
            if sub._feed is not None:
                sub._feed.end(exc)

    # -- internals: one connection -----------------------------------------------

    async def _serve(self, ws: ClientConnection) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(ws, next(self._gens), loop.time())
        conn.resync = ResyncBuffer(self.max_resync_events)
        self._conn = conn
        self.stats.connections += 1
        reader = asyncio.create_task(self._read_loop(conn), name="realtime-reader")
        helpers = [asyncio.create_task(self._setup(conn), name="realtime-setup")]
        if self.heartbeat_interval is not None:
            helpers.append(asyncio.create_task(self._keepalive(conn), name="realtime-keepalive"))
        try:
            await reader
        finally:
            for t in (*helpers, *conn.tasks):
                t.cancel()
            for t in (*helpers, *conn.tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            self._conn = None
            if self._established is not None and not self._closing:
                self._established.clear()
            lost = _Lost("connection closed")
            for p in conn.pending.values():
                if not p.future.done():
                    p.future.set_exception(lost)
            conn.pending.clear()
            with contextlib.suppress(Exception):
                await ws.close()
        return conn

    def _abort(self, conn: _Conn, why: str) -> None:
        log.warning("dropping the connection: %s", why)
        transport = conn.ws.transport
        if transport is not None:
            transport.abort()

    async def _read_loop(self, conn: _Conn) -> None:
        ws = conn.ws
        loop = asyncio.get_running_loop()
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    conn.close_code = exc.rcvd.code
                    conn.close_reason = exc.rcvd.reason
                return
            conn.last_rx = loop.time()
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("ignoring a frame that is not JSON: %.80r", raw)
                continue
            if not isinstance(msg, dict):
                continue
            kind = msg.get("event_type")
            if kind in ("message_ack", "error"):
                await self._on_reply(conn, msg, kind == "error")
            else:
                await self._on_event(conn, msg)
            if conn.fatal is not None:
                await ws.close(1000, "client stopping")
                return

    async def _setup(self, conn: _Conn) -> None:
        try:
            if self.token_transport == "auth_message" and self._token is not None:
                try:
                    await self._authenticate(conn, self._token)
                except RequestError as exc:
                    conn.fatal = TerminalCloseError(CloseCode.UNAUTHORIZED, str(exc))
                    await conn.ws.close(1000, "client stopping")
                    return
            for sub in list(self._subs.values()):
                if sub.active and sub._gen != conn.gen:
                    conn.resync_subs.add(sub.id)
                    await self._send_subscribe(conn, sub)
            for room in sorted(self._rooms):
                await self._fire(conn, "join", {"room": room})
            barrier = await self._send_barrier(conn)
            try:
                await asyncio.wait_for(asyncio.shield(barrier), self.request_timeout)
            except TimeoutError:
                self._abort(conn, f"no reply to resubscription within {self.request_timeout} s")
        except _Lost:
            return

    async def _send_barrier(self, conn: _Conn) -> asyncio.Future[dict[str, Any]]:
        # Replies come in request order, each after its request's replay: the reply
        # to this heartbeat means every replay requested before it has arrived.
        def passed(result: dict[str, Any]) -> list[_Delivery]:
            conn.barrier_passed = True
            return self._finish_resync(conn)

        return await self._send(conn, "heartbeat", None, on_ack=passed)

    def _resync_settled(self, conn: _Conn, sub: Subscription) -> None:
        """``sub`` no longer awaits its resubscribe ack."""
        if sub.id not in conn.resync_subs:
            return
        conn.resync_subs.discard(sub.id)
        if not conn.resync_subs and conn.barrier_passed and conn.resync is not None:
            # Its replay follows its ack: one more barrier before releasing events.
            conn.barrier_passed = False
            self._spawn(conn, self._send_barrier(conn))

    def _finish_resync(self, conn: _Conn) -> list[_Delivery]:
        buf = conn.resync
        if buf is None or conn.resync_subs or not conn.barrier_passed:
            return []
        conn.resync = None
        held = len(buf)
        out = buf.drain(self._tracker)
        self.stats.duplicates_dropped += held - len(out)
        for stream, (epoch, offset) in conn.resync_advance.items():
            self._tracker.advance(stream, epoch, offset)
        conn.resync_advance.clear()
        conn.established = True
        self._set_state(ClientState.OPEN)
        if self._established is not None:
            self._established.set()
        if self._open_event is not None:
            self._open_event.set()
        return out

    def _heartbeat_reply(self, conn: _Conn) -> Callable[[dict[str, Any]], list[_Delivery]]:
        def reply(result: dict[str, Any]) -> list[_Delivery]:
            # Positions from plain acks at least one heartbeat round old are safe now.
            for stream, (epoch, offset) in conn.advance_ready.items():
                self._tracker.advance(stream, epoch, offset)
            conn.advance_ready = conn.advance
            conn.advance = {}
            return []

        return reply

    async def _keepalive(self, conn: _Conn) -> None:
        assert self.heartbeat_interval is not None
        loop = asyncio.get_running_loop()
        interval = self.heartbeat_interval
        bound = interval + self.heartbeat_timeout
        next_beat = loop.time() + interval
        while True:
            now = loop.time()
            if conn.blocked:  # waiting on the application, not on the network
                conn.last_rx = now
            await asyncio.sleep(max(0.0, min(next_beat, conn.last_rx + bound) - now))
            now = loop.time()
            if not conn.blocked and now - conn.last_rx >= bound:
                self._abort(conn, f"nothing received for {now - conn.last_rx:.1f} s")
                return
            if now >= next_beat:
                next_beat = now + interval
                if not conn.established:
                    continue  # setup (auth first, where required) owns the connection
                try:
                    await asyncio.wait_for(
                        self._send(conn, "heartbeat", None, on_ack=self._heartbeat_reply(conn)),
                        self.heartbeat_timeout,
                    )
                except (_Lost, TimeoutError):
                    return

    # -- internals: requests -----------------------------------------------------

    async def _send(
        self,
        conn: _Conn,
        type_: str,
        data: dict[str, Any] | None,
        on_ack: Callable[[dict[str, Any]], list[_Delivery]] | None = None,
        on_error: Callable[[RequestError], list[_Delivery]] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        rid = next(self._req_ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        conn.pending[rid] = _Pending(fut, type_, on_ack, on_error)
        msg: dict[str, Any] = {"type": type_, "id": rid}
        if data is not None:
            msg["data"] = data
        try:
            await conn.ws.send(orjson.dumps(msg).decode())
        except ConnectionClosed:
            conn.pending.pop(rid, None)
            raise _Lost("connection closed") from None
        return fut

    async def _fire(self, conn: _Conn, type_: str, data: dict[str, Any] | None) -> None:
        await self._send(conn, type_, data)

    async def _request_on(
        self, conn: _Conn, type_: str, data: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        fut = await self._send(conn, type_, data)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(timeout, 0.0))
        except TimeoutError:
            raise RequestTimeout(f"no reply to {type_} within the timeout") from None

    async def _wait_open(self, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        established = self._established
        assert established is not None
        while True:
            self._check_usable()
            conn = self._conn
            if conn is not None and conn.established:
                return conn
            left = deadline - loop.time()
            if left <= 0:
                raise RequestTimeout("not connected within the timeout")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(established.wait(), left)
            if established.is_set() and (self._conn is None or not self._conn.established):
                await asyncio.sleep(0)  # set for a connection that is already gone

    async def _send_subscribe(self, conn: _Conn, sub: Subscription) -> None:
        sub._gen = conn.gen
        data: dict[str, Any] = {"filters": sub.filters}
        if sub.subscription_type is not None:
            data["subscription_type"] = sub.subscription_type
        since = self._tracker.since(sub.streams) if sub.streams else None
        if since is not None:
            data["since"] = since
        if sub.snapshot:
            data["snapshot"] = True
        await self._send(
            conn,
            "subscribe",
            data,
            on_ack=lambda result: self._on_subscribe_ack(conn, sub, result, since),
            on_error=lambda exc: self._on_subscribe_error(conn, sub, exc, since),
        )

    def _on_subscribe_ack(
        self,
        conn: _Conn,
        sub: Subscription,
        result: dict[str, Any],
        since: dict[str, Any] | None,
    ) -> list[_Delivery]:
        if not sub.active:
            # Given up (timeout) or unsubscribed meanwhile: remove it on the server too.
            sid = result.get("subscription_id")
            if isinstance(sid, str):
                self._spawn(conn, self._fire(conn, "unsubscribe", {"subscription_id": sid}))
            return []
        sub._apply_ack(result)
        sub._retries = 0
        streams = result.get("streams")
        streams = streams if isinstance(streams, Mapping) else {}
        changed = self._tracker.on_ack(streams)
        for stream, pos in positions(streams).items():
            start = sub._start.get(stream)
            if start is None or start[0] != pos[0]:
                sub._start[stream] = pos
        later = (
            conn.resync_advance if since is not None and conn.resync is not None else conn.advance
        )
        for stream, (epoch, offset) in positions(streams).items():
            prev = later.get(stream)
            if prev is not None and prev[0] == epoch:
                offset = max(offset, prev[1])
            later[stream] = (epoch, offset)
        recovered = result.get("recovered")
        out: list[_Delivery] = []
        if since is not None:
            sub.recovered = recovered is True
            if recovered is True:
                self.stats.recoveries += 1
            else:
                reason = result.get("reason")
                out.append(self._notice(sub, tuple(since), reason, "server did not recover"))
        elif changed and set(changed) & set(sub.streams):
            moved = tuple(s for s in changed if s in sub.streams)
            out.append(self._notice(sub, moved, None, "the stream's epoch changed"))
        if sub.snapshot and recovered is not True:
            offsets = {k: o for k, (_, o) in positions(streams).items()}
            conn.snapshot = _SnapshotWindow(sub, offsets)
        if not sub._ready.done():
            sub._ready.set_result(None)
        self._resync_settled(conn, sub)
        return out

    def _notice(
        self, sub: Subscription, streams: tuple[str, ...], reason: Any, default: str
    ) -> _Delivery:
        self.stats.recoveries_failed += 1
        text = reason if isinstance(reason, str) and reason else default
        log.info("subscription %s not recovered: %s", sub.id, text)
        return (RecoveryFailed(sub, streams, text), None, False)

    def _on_subscribe_error(
        self, conn: _Conn, sub: Subscription, exc: RequestError, since: dict[str, Any] | None
    ) -> list[_Delivery]:
        if exc.code == "unavailable" and sub.active:
            # The broker is unreachable for now: ask again after a backoff delay; the
            # resubscription (and the events held meanwhile) waits for the answer.
            self._spawn(conn, self._retry_subscribe(conn, sub))
            return []
        if exc.code == "invalid_since" and since is not None and sub.active:
            # The server's idea of the subscription's streams changed (e.g. the tier
            # narrowed it): subscribe afresh and say that nothing was recovered.
            sub.streams = ()
            self._spawn(conn, self._send_subscribe(conn, sub))
            return [self._notice(sub, tuple(since), exc.message, "invalid since")]
        if sub._ready.done():
            log.warning("the server refused to renew subscription %s: %s", sub.id, exc)
        self._drop_sub(sub, exc)
        if not sub._ready.done():
            sub._ready.set_exception(exc)
        self._resync_settled(conn, sub)
        return []

    async def _retry_subscribe(self, conn: _Conn, sub: Subscription) -> None:
        sub._retries += 1
        await asyncio.sleep(self.backoff.delay(sub._retries))
        if sub.active and self._conn is conn:
            await self._send_subscribe(conn, sub)

    def _drop_sub(self, sub: Subscription, exc: BaseException | None) -> None:
        sub.active = False
        if self._subs.get(sub.id) is sub:
            del self._subs[sub.id]
        if sub._feed is not None:
            sub._feed.end(exc)
        conn = self._conn
        if conn is not None:
            self._resync_settled(conn, sub)  # the resubscription no longer waits for it

    def _spawn(self, conn: _Conn, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            with contextlib.suppress(_Lost):
                await coro

        task = asyncio.get_running_loop().create_task(run())
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    # -- internals: incoming -----------------------------------------------------

    async def _on_reply(self, conn: _Conn, msg: dict[str, Any], is_error: bool) -> None:
        conn.snapshot = None  # whatever the previous request streamed has ended
        data = msg.get("data")
        if not isinstance(data, dict):
            return
        rid = data.get("id")
        pending = conn.pending.pop(rid, None) if type(rid) is int else None
        if pending is None:
            if is_error:
                log.warning("server error: %s: %s", data.get("code"), data.get("message"))
            return
        out: list[_Delivery] = []
        if is_error:
            exc = request_error(
                str(data.get("code")), str(data.get("message")), data.get("type") or pending.type
            )
            if pending.on_error is not None:
                out = pending.on_error(exc)
            if not pending.future.done():
                pending.future.set_exception(exc)
        else:
            result = data.get("result")
            result = result if isinstance(result, dict) else {}
            if pending.on_ack is not None:
                out = pending.on_ack(result)
            if not pending.future.done():
                pending.future.set_result(result)
        for d in out:
            await self._emit(conn, d)

    async def _on_event(self, conn: _Conn, msg: dict[str, Any]) -> None:
        ev = parse_event(msg, self._warned)
        self.stats.events += 1
        stream = ev.stream
        offset = ev.offset
        target: Subscription | None = None
        if_seen: _Delivery | None = None
        if stream is not None and offset is not None:
            w = conn.snapshot
            if w is not None and offset <= w.offsets.get(stream, -1):
                # Sent as the subscription's initial state. If the application has
                # seen this offset already, it is state for that subscription only,
                # outside the duplicate bookkeeping; otherwise it is news for all.
                ev = replace(ev, snapshot=True)
                target = w.sub
                if_seen = (ev, target, True)
        elif ev.event_type == EventType.CONNECTION_STATUS:
            self._on_status(conn, ev)
        delivery: _Delivery = (ev, target, False)
        if conn.resync is not None:
            if conn.resync.full:
                conn.fatal = ClientClosed(
                    f"more than {self.max_resync_events} events arrived while resubscribing "
                    "(raise max_resync_events)"
                )
                return
            if stream is not None and offset is not None:
                conn.resync.add(delivery, stream, offset, if_seen)
            else:
                conn.resync.add(delivery)
            return
        if stream is not None and offset is not None and not self._tracker.accept(stream, offset):
            if if_seen is None:
                self.stats.duplicates_dropped += 1
                return
            delivery = if_seen
        await self._emit(conn, delivery)

    def _on_status(self, conn: _Conn, ev: Event[Payload]) -> None:
        data = ev.raw.get("data") or {}
        status = data.get("status")
        if status == "connected":
            self.connection_info = dict(data)
        elif (
            status == "warning"
            and data.get("reason", "token_expiring") == "token_expiring"
            and self._token_provider is not None
            and conn.established
        ):
            # The server warns before the token expires: refresh in-band.
            self._spawn(conn, self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_token()
        except Exception as exc:
            log.warning("token refresh failed: %s", exc)

    async def _emit(self, conn: _Conn, delivery: _Delivery) -> None:
        if conn.resync is not None:
            conn.resync.add(delivery)
            return
        q = self._dispatch_q
        assert q is not None
        try:
            q.put_nowait(delivery)
        except asyncio.QueueFull:
            conn.blocked = True
            try:
                await q.put(delivery)
            finally:
                conn.blocked = False
                conn.last_rx = asyncio.get_running_loop().time()

    # -- internals: dispatch -----------------------------------------------------

    async def _dispatch_loop(self) -> None:
        q = self._dispatch_q
        assert q is not None
        while True:
            entry = await q.get()
            if entry is None:
                self._end_feeds(self._error)
                if self._closed_event is not None:
                    self._closed_event.set()
                return
            if isinstance(entry, ClientState):
                for h in list(self._handlers.get(CLIENT_STATE, ())):
                    await self._call(h, entry)
                continue
            await self._deliver(*entry)

    async def _deliver(self, item: Item, target: Subscription | None, only: bool) -> None:
        subs: list[Subscription] = []
        if isinstance(item, RecoveryFailed):
            subs = [item.subscription]
        elif only and target is not None:
            subs = [target]
        elif item.stream is not None:
            matching = [s for s in self._subs.values() if s.matches(item)]
            subs = [s for s in matching if s._after_start(item)]
            if target is not None and target not in subs:
                subs.append(target)
            if matching and not subs:
                # Replayed from a position older than the subscriptions it matches:
                # it predates them, nobody asked for it.
                return
        handlers = [*self._handlers.get(item.event_type, ()), *self._handlers.get(ANY, ())]
        for h in handlers:
            await self._call(h, item)
        if isinstance(item, RecoveryFailed) and self.on_recovery_failed is not None:
            await self._call(self.on_recovery_failed, item)
        if self._feed is not None:
            await self._feed.put(item)
        for s in subs:
            if s._feed is not None and s.active:
                await s._feed.put(item)

    async def _call(self, handler: Callable[[Any], object], arg: Any) -> None:
        try:
            result = handler(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("event handler %r failed", handler)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Replies nobody awaits (heartbeats, resubscriptions) must not warn when they fail.
    if not fut.cancelled():
        fut.exception()
