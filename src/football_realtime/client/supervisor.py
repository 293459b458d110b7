"""The connection loop: connect, serve the connection, reconnect with backoff, or stop.

:meth:`Supervisor.run` is the client's supervisor task. It opens connections and
serves each until it ends, then decides: reconnect (full-jitter backoff; at once,
spread a little, after 1012), or stop (terminal close code or handshake answer,
attempts used up, application close). Serving a connection runs three tasks:

* the reader (socket -> replies settle requests, events go through recovery ->
  dispatch queue; it waits while the queue is full: backpressure);
* the setup (auth where required, resubscribe with ``since``, rejoin rooms, then a
  heartbeat as a barrier; the connection is open when the held events are released);
* the keepalive (heartbeats out, and a watchdog that drops a silent connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..core.close_codes import CloseCode, should_reconnect
from ..core.events import EventType, Payload
from .auth import Authenticator
from .connection import Connection
from .dispatch import Delivery, Dispatcher
from .errors import (
    ClientClosed,
    RealtimeClientError,
    ReconnectFailed,
    RequestError,
    TerminalCloseError,
)
from .lifecycle import Lifecycle
from .models import ClientState, ClientStats, Event, parse_event
from .options import ClientOptions
from .requests import Lost, RequestChannel
from .resync import Resync
from .session import ClientSession
from .subscribe import Subscriber
from .subscription import SubscriptionRegistry

log = logging.getLogger("football_realtime.client")

# HTTP answers to the handshake that retrying unchanged cannot fix.
_TERMINAL_HTTP = frozenset({400, 404, 405, 426})
_AUTH_HTTP = frozenset({401, 403})


class Supervisor:
    def __init__(
        self,
        options: ClientOptions,
        stats: ClientStats,
        lifecycle: Lifecycle,
        dispatcher: Dispatcher,
        registry: SubscriptionRegistry,
        resync: Resync,
        subscriber: Subscriber,
        auth: Authenticator,
        session: ClientSession,
    ) -> None:
        self._options = options
        self._stats = stats
        self._life = lifecycle
        self._dispatcher = dispatcher
        self._registry = registry
        self._resync = resync
        self._subscriber = subscriber
        self._auth = auth
        self._session = session
        self._warned: set[str] = set()
        self._gens = itertools.count(1)
        self._req_ids = itertools.count(1)

    # -- connect, reconnect, stop ------------------------------------------------

    async def run(self) -> None:
        """Connect and reconnect until the client stops (then the dispatcher is told)."""
        life = self._life
        try:
            await self._reconnect_loop()
        except asyncio.CancelledError:
            raise
        except RealtimeClientError as exc:
            life.fail(exc)
            await self._dispatcher.stop(exc)
        except Exception as exc:  # a bug: end the client loudly rather than hang
            log.exception("realtime client supervisor failed")
            error = ClientClosed(f"client failed: {exc!r}")
            life.fail(error)
            await self._dispatcher.stop(error)

    async def _reconnect_loop(self) -> None:
        o = self._options
        life = self._life
        failures = 0
        last_error: BaseException | None = None
        first = True
        quick = False
        while True:
            if not first:
                if o.max_reconnect_attempts is not None and failures >= o.max_reconnect_attempts:
                    raise ReconnectFailed(failures, last_error)
                life.set_state(ClientState.RECONNECTING)
                if quick:  # 1012: another instance answers at once; spread a little
                    await asyncio.sleep(random.random() * o.backoff.min_delay)
                else:
                    await asyncio.sleep(o.backoff.delay(max(failures, 1)))
                quick = False
                self._stats.reconnects += 1
            first = False
            if life.state is not ClientState.RECONNECTING:
                life.set_state(ClientState.CONNECTING)
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
                    status in _AUTH_HTTP and not self._auth.has_provider
                ):
                    raise TerminalCloseError(status, f"handshake refused: {exc}") from None
                if not o.auto_reconnect:
                    raise ReconnectFailed(failures, exc) from None
                continue
            conn = await self._serve(ws)
            if life.closing:
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
                code == CloseCode.TOKEN_EXPIRED and self._auth.has_provider
            ):
                raise TerminalCloseError(code, conn.close_reason)
            if not o.auto_reconnect:
                raise ReconnectFailed(max(failures, 1), last_error)
            log.info("connection closed (%s %r); reconnecting", code, conn.close_reason)

    async def _open(self) -> ClientConnection:
        o = self._options
        params, headers = await self._auth.handshake()
        params.update(self._session.params())
        kw: dict[str, Any] = {
            "open_timeout": o.open_timeout,
            "ping_interval": None,  # liveness is our heartbeat's job
            # permessage-deflate offered (websockets' client: window bits left to
            # the server); a server that does not answer it sends plain frames.
            "compression": "deflate" if o.compression else None,
            "max_size": o.max_message_size,
            "close_timeout": o.heartbeat_timeout,
            "additional_headers": headers or None,
        }
        kw.update(o.connect_kwargs)
        return await connect(_with_query(o.url, params), **kw)

    # -- one connection ------------------------------------------------------------

    async def _serve(self, ws: ClientConnection) -> Connection:
        loop = asyncio.get_running_loop()
        conn = Connection(
            ws,
            next(self._gens),
            loop.time(),
            RequestChannel(ws, self._req_ids),
            self._resync.new_state(),
        )
        self._life.attach(conn)
        self._stats.connections += 1
        reader = asyncio.create_task(self._read_loop(conn), name="realtime-reader")
        helpers = [asyncio.create_task(self._setup(conn), name="realtime-setup")]
        if self._options.heartbeat_interval is not None:
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
            self._life.detach()
            conn.channel.fail_all()
            with contextlib.suppress(Exception):
                await ws.close()
        return conn

    async def _setup(self, conn: Connection) -> None:
        try:
            token = self._auth.in_band_token
            if token is not None:
                try:
                    await self._auth.authenticate(conn, token)
                except RequestError as exc:
                    conn.fatal = TerminalCloseError(CloseCode.UNAUTHORIZED, str(exc))
                    await conn.ws.close(1000, "client stopping")
                    return
            if self._session.enabled and self._session.id is not None:
                # A resumed session's restored subscriptions are announced before the
                # server reads anything: once a heartbeat is answered, all are in.
                await conn.channel.request("heartbeat", None, self._options.request_timeout)
            await self._subscriber.renew_all(conn)
            for room in sorted(self._registry.rooms):
                await conn.channel.fire("join", {"room": room})
            barrier = await self._resync.send_barrier(conn)
            timeout = self._options.request_timeout
            try:
                await asyncio.wait_for(asyncio.shield(barrier), timeout)
            except TimeoutError:
                conn.abort(f"no reply to resubscription within {timeout} s")
        except Lost:
            return

    async def _keepalive(self, conn: Connection) -> None:
        o = self._options
        assert o.heartbeat_interval is not None
        loop = asyncio.get_running_loop()
        interval = o.heartbeat_interval
        bound = interval + o.heartbeat_timeout
        next_beat = loop.time() + interval
        while True:
            now = loop.time()
            if conn.blocked:  # waiting on the application, not on the network
                conn.last_rx = now
            await asyncio.sleep(max(0.0, min(next_beat, conn.last_rx + bound) - now))
            now = loop.time()
            if not conn.blocked and now - conn.last_rx >= bound:
                conn.abort(f"nothing received for {now - conn.last_rx:.1f} s")
                return
            if now >= next_beat:
                next_beat = now + interval
                if not conn.established:
                    continue  # setup (auth first, where required) owns the connection
                try:
                    await asyncio.wait_for(
                        conn.channel.send(
                            "heartbeat", None, on_ack=self._resync.heartbeat_reply(conn)
                        ),
                        o.heartbeat_timeout,
                    )
                except Lost:
                    return
                except TimeoutError:  # the socket does not drain: the peer is stuck
                    conn.abort(f"a heartbeat could not be sent within {o.heartbeat_timeout} s")
                    return

    # -- reading -------------------------------------------------------------------

    async def _read_loop(self, conn: Connection) -> None:
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
                conn.sync.snapshot = None  # whatever the previous request streamed has ended
                for d in conn.channel.resolve(msg, kind == "error"):
                    await self._emit(conn, d)
            else:
                await self._on_event(conn, msg)
            if conn.fatal is not None:
                await ws.close(1000, "client stopping")
                return

    async def _on_event(self, conn: Connection, msg: dict[str, Any]) -> None:
        ev = parse_event(msg, self._warned)
        self._stats.events += 1
        if (ev.stream is None or ev.offset is None) and ev.event_type == (
            EventType.CONNECTION_STATUS
        ):
            self._on_status(conn, ev)
        elif ev.event_type == EventType.USER_SUBSCRIPTION_CHANGED and self._session.enabled:
            data = ev.raw.get("data") or {}
            if data.get("restored") is True and data.get("connection_id") == (
                self._life.connection_info.get("connection_id")
            ):
                self._session.restored(conn, data)
        delivery = self._resync.route(conn, ev)
        if delivery is not None:
            await self._emit(conn, delivery)

    def _on_status(self, conn: Connection, ev: Event[Payload]) -> None:
        data = ev.raw.get("data") or {}
        status = data.get("status")
        if status == "connected":
            self._life.connected(dict(data))
            self._session.welcome(data.get("session"))
        elif (
            status == "warning"
            and data.get("reason", "token_expiring") == "token_expiring"
            and self._auth.has_provider
            and conn.established
        ):
            # The server warns before the token expires: refresh in-band.
            conn.spawn(self._auth.refresh_quietly())

    async def _emit(self, conn: Connection, delivery: Delivery) -> None:
        buffer = conn.sync.buffer
        if buffer is not None:
            buffer.add(delivery)
            return
        if self._dispatcher.offer(delivery):
            return
        conn.blocked = True
        try:
            await self._dispatcher.put(delivery)
        finally:
            conn.blocked = False
            conn.last_rx = asyncio.get_running_loop().time()


def _with_query(url: str, params: Mapping[str, str | None]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))
