"""The state of one WebSocket connection, declared once for the modules that build
``WebSocketProtocol`` (docs/architecture.md, "The server layer").

``WebSocketProtocol`` is assembled in layers, one module each, each using only the
ones below it: this state, ``websocket_keepalive`` (pings on the shared wheel),
``websocket_frames`` (reading frames), ``websocket_asgi`` (the ASGI interface and
HTTP refusals), and ``websocket_protocol`` (asyncio callbacks, the opening handshake
and the service's fast path). The layers above
declare empty ``__slots__``, so a connection is one slotted object as before the split.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from typing import Any, ClassVar

from websockets.http11 import Response
from websockets.server import ServerProtocol

from ..core.limits import TokenBucket
from .waiters import Flag, Inbox
from .websocket_layer import WebSocketLayer


class ConnectionState(asyncio.Protocol):
    """Attributes of a connection (set in ``WebSocketProtocol.__init__``). The slots are
    declared here, at the root, so every layer may assign them."""

    __slots__ = (
        "client",
        "close_sent",
        "close_timer",
        "conn",
        "deflate",
        "disconnected",
        "frag_open",
        "frag_skip",
        "frag_tail",
        "frames",
        "handshake_complete",
        "inbox",
        "inflate_bits",
        "initial_response",
        "keepalive_slot",
        "last_ping_rtt",
        "last_received",
        "on_lost",
        "on_shutdown",
        "on_text",
        "on_writable",
        "partial_dropped",
        "pending_ping",
        "ping_sent_at",
        "pings",
        "read_paused",
        "response",
        "scope",
        "server",
        "task",
        "text",
        "transport",
        "utf8",
        "writable",
        "write_paused",
    )

    #: Per-server state, set on the class ``server.config.ws_protocol`` makes.
    layer: ClassVar[WebSocketLayer]

    transport: asyncio.Transport
    #: websockets' sans-I/O protocol, once the upgrade request is accepted.
    conn: ServerProtocol | None
    scope: dict[str, Any] | None
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    task: asyncio.Task[None] | None
    #: The 101 response, sent when the app accepts.
    response: Response | None
    #: permessage-deflate negotiated so that shared compressed frames may be written
    #: (``service.connection.FrameTransport.deflate``).
    deflate: bool
    #: The client's messages are compressed each on its own with this many window bits
    #: (permessage-deflate, ``client_no_context_takeover``); 0: not compressed.
    inflate_bits: int
    #: An HTTP response the app sends instead of accepting (status, headers, body).
    initial_response: tuple[int, list[tuple[str, str]], bytes] | None
    inbox: Inbox
    writable: Flag | None
    handshake_complete: bool
    close_sent: bool
    disconnected: bool
    read_paused: bool
    write_paused: bool
    close_timer: asyncio.TimerHandle | None
    # The fast path's callbacks (service.connection.FrameTransport).
    on_writable: Callable[[bool], None] | None
    on_lost: Callable[[], None] | None
    on_shutdown: Callable[[], None] | None
    on_text: Callable[[str], bool] | None
    # Keepalive.
    keepalive_slot: int
    pending_ping: bytes | None
    ping_sent_at: float
    last_ping_rtt: float
    last_received: float
    pings: TokenBucket | None
    # A message in several frames.
    frames: list[Any] | None
    text: bool
    utf8: codecs.IncrementalDecoder | None
    # Frame boundaries as read so far (websocket_frames.FrameReader.boundaries).
    frag_open: bool
    frag_skip: int
    frag_tail: bytes
    partial_dropped: bool


__all__ = ["ConnectionState"]
