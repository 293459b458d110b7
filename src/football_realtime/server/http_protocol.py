"""A deadline and a size limit for request headers, around uvicorn's own HTTP protocol.

uvicorn alone keeps a connection that sends nothing, or one header byte per second
(slowloris), open indefinitely, and httptools puts no limit on the size of request
headers. :class:`HeaderDeadline` is an ``asyncio.Protocol`` that owns an instance of
uvicorn's stock ``httptools`` protocol (looked up from the documented ``http`` choice,
constructed with the keyword arguments uvicorn uses) and forwards every protocol
callback to it. Alongside, it reads the same bytes with its own
``httptools.HttpRequestParser`` (``on_message_begin``/``on_headers_complete``) to see
where each request's headers start and end:

* the headers of each request (WebSocket upgrades included) must be complete within
  ``handshake_timeout`` seconds of the connection opening or the request starting:
  otherwise 408 and the connection is closed;
* at most ``max_header_bytes`` of request line and headers per request: otherwise 431.

uvicorn's protocol sees the transport through a :class:`TransportView`. When it hands
the connection to the WebSocket layer (``set_protocol``), the view is cut off and the
HTTP protocol gets ``connection_lost`` like any finished connection (so it lets go of
its parser and the request; whatever it does to the view then is a no-op), and this
protocol drops its timer and parser.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import httptools
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from .transport_view import TransportView

log = logging.getLogger("football_realtime.serving")

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 24\r\nconnection: close\r\n\r\nrequest headers too slow"
)

HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 25\r\nconnection: close\r\n\r\nrequest headers too large"
)


def stock_http_protocol() -> Any:
    """uvicorn's ``http="httptools"`` protocol class."""
    return import_from_string(HTTP_PROTOCOLS["httptools"])


class HeaderDeadline(asyncio.Protocol):
    """uvicorn's HTTP protocol plus a deadline and a size limit for request headers.

    ``server.config.http_protocol`` makes a class per setting of ``handshake_timeout``.
    """

    handshake_timeout = 10.0
    #: Bytes of request line and headers one request may send (431 past that).
    max_header_bytes = 65536
    #: The HTTP protocol class wrapped (uvicorn's httptools protocol by default).
    inner_class: Any = None

    __slots__ = ("header_bytes", "http", "loop", "parser", "timer", "transport", "view")

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        inner = self.inner_class or stock_http_protocol()
        self.http: asyncio.Protocol | None = inner(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        self.loop = _loop or asyncio.get_running_loop()
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.timer: asyncio.TimerHandle | None = None
        self.header_bytes = 0
        self.transport: asyncio.Transport | None = None
        self.view: TransportView | None = None

    # -- forwarded asyncio.Protocol callbacks ----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.view = TransportView(transport)
        assert self.http is not None
        self.http.connection_made(self.view)
        self._arm()

    def data_received(self, data: bytes) -> None:
        http = self.http
        if http is None:
            return
        parser = self.parser
        pending = self.timer is not None
        if parser is not None:
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self.parser = None  # what follows is not HTTP
            except httptools.HttpParserError:
                self.parser = None  # uvicorn answers 400 and closes
                self._disarm()
        http.data_received(data)
        transport = self.transport
        assert transport is not None and self.view is not None
        if self.view.cut:
            # Upgraded: the WebSocket layer has the connection; for the HTTP protocol
            # it is over.
            self._detach()
            http.connection_lost(None)
            return
        if pending and self.timer is not None:
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes and not transport.is_closing():
                self._disarm()
                transport.write(HEADERS_TOO_LARGE)
                transport.close()

    def eof_received(self) -> bool | None:
        return self.http.eof_received() if self.http is not None else None

    def pause_writing(self) -> None:
        if self.http is not None:
            self.http.pause_writing()

    def resume_writing(self) -> None:
        if self.http is not None:
            self.http.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        http = self.http
        self._detach()
        if http is not None:
            http.connection_lost(exc)

    # -- httptools parser callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()

    # -- the deadline ----------------------------------------------------------------------

    def _arm(self) -> None:
        if self.timer is None:
            self.header_bytes = 0
            self.timer = self.loop.call_later(self.handshake_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _detach(self) -> None:
        self._disarm()
        self.parser = None
        self.http = None
        self.view = None

    def _too_slow(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, (tuple, list)) else "?"
        log.info(
            "closing %s: request headers not complete within %ss", client, self.handshake_timeout
        )
        transport.write(REQUEST_TIMEOUT)
        transport.close()


__all__ = [
    "HEADERS_TOO_LARGE",
    "REQUEST_TIMEOUT",
    "HeaderDeadline",
    "TransportView",
    "stock_http_protocol",
]
