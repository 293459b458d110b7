"""One client connection: identity, subscriptions, counters, and its outbound path.

The hub calls :meth:`Connection.send` for every message; it never awaits. Bytes
go straight to the socket while it keeps up, otherwise into a bounded
:class:`OutboundBuffer`. Two sinks move the bytes:

* ``FastSink`` (``edges/sinks.py``) writes pre-built frames to the transport of our
  WebSocket layer and drains the buffer from its ``resume_writing`` callback: no
  task and no await per connection or delivery.
* ``AsgiSink`` (same module) works under any ASGI server (the router mounted in
  another app): a writer task awaits ``websocket.send`` for what the buffer holds.

Under pressure (only while the buffer holds something): keyed events are conflated
(``core/conflation.py``), and a connection that asked for batching (``batch=1``)
receives what has queued up as one frame holding a JSON array of messages.

Compression (permessage-deflate without server context takeover, RFC 7692): a
connection whose transport negotiated it holds the service's :class:`SharedDeflate`
in ``deflate``; every frame it writes is the message's compressed frame, built once
per :class:`Encoded` and shared by every connection that writes the same message.
Connections without compression pay one attribute test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from ..core.close_codes import CloseCode
from ..core.encoding import batch_payload, deflated_text_frame, mark_conflated, text_frame
from ..core.outbound import OutboundBuffer
from ..core.subscriptions import Subscription
from ..stats import ServiceStats

log = logging.getLogger("football_realtime.connection")

#: Largest batch frame payload (bytes); one message larger than this goes alone.
BATCH_MAX_BYTES = 65536


class Encoded:
    """One message serialised once, with the frame that carries it; shared by every
    connection that receives it. ``zframe``: its compressed frame, built by
    :class:`SharedDeflate` when a compressing connection first writes it."""

    __slots__ = ("frame", "payload", "size", "zframe")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.size = len(payload)
        self.frame = text_frame(payload)
        self.zframe: bytes | None = None


class SharedDeflate:
    """The frames of connections that negotiated permessage-deflate: a message's
    compressed frame (RSV1, no context takeover: it depends on the message alone),
    built once per message and kept on its :class:`Encoded`, so one event costs one
    deflate per tier view however many connections receive it. Messages shorter than
    ``min_bytes`` go as the plain frame (RFC 7692 lets each message choose)."""

    __slots__ = ("compressed", "level", "min_bytes", "saved")

    def __init__(self, min_bytes: int, level: int = 6) -> None:
        self.min_bytes = min_bytes
        self.level = level
        #: Messages compressed, and bytes they saved (per message, not per delivery).
        self.compressed = 0
        self.saved = 0

    def frame(self, enc: Encoded) -> bytes:
        """The frame a compressing connection writes for ``enc``."""
        z = enc.zframe
        if z is None:
            if enc.size < self.min_bytes:
                z = enc.frame
            else:
                z = deflated_text_frame(enc.payload, self.level)
                self.compressed += 1
                self.saved += len(enc.frame) - len(z)
            enc.zframe = z
        return z


#: ASGI scope extension under which a server offers a :class:`FrameTransport`
#: (``scope["extensions"][FRAME_TRANSPORT]["protocol"]``).
FRAME_TRANSPORT = "football_realtime.transport"


class FrameTransport(Protocol):
    """The fast path a WebSocket server may offer a connection: writes of pre-built
    frames and callbacks instead of awaits. The service sets the ``on_*`` callbacks."""

    #: True while the socket does not take more data (flow control).
    write_paused: bool
    #: Called with False when writing pauses and True when it resumes.
    on_writable: Callable[[bool], None] | None
    #: Called once when the connection is lost.
    on_lost: Callable[[], None] | None
    #: Called on graceful server shutdown, before the server closes with 1012.
    on_shutdown: Callable[[], None] | None
    #: Called with a text message, in the socket's read callback, when the app waits
    #: in ``receive`` for the next message and nothing is queued before this one
    #: (so handling it now keeps the order); True: the service took it (it will not
    #: come through ``receive``), False: it comes through ``receive`` as usual.
    on_text: Callable[[str], bool] | None
    #: True when the connection negotiated permessage-deflate with
    #: ``server_no_context_takeover`` and a 15-bit server window: frames written may be
    #: compressed ones (RSV1) built once for every such connection.
    deflate: bool

    @property
    def write(self) -> Callable[[bytes], object]:
        """Writes one complete frame to the socket."""
        ...

    async def receive(self) -> Any:
        """The ASGI ``receive`` of the connection."""
        ...

    def close_now(self, code: int, reason: str, abort: bool) -> None:
        """Start the closing handshake without awaiting; ``abort``: the peer does not
        read, drop the connection with a TCP reset after a short grace."""
        ...


class Sink(Protocol):
    writable: bool
    #: Writes a frame straight to the socket (the transport's write), or None when
    #: this sink always goes through the connection's buffer.
    direct: Callable[[bytes], object] | None

    def write(self, frame: bytes) -> None: ...
    def wake(self) -> None: ...
    def close(self, code: int, reason: str, abort: bool) -> None: ...


class Connection:
    __slots__ = (
        "__weakref__",
        "batch",
        "bytes_received",
        "bytes_sent",
        "client_addr",
        "closing",
        "connected_at",
        "connected_mono",
        "deflate",
        "direct",
        "drain_waiter",
        "durable",
        "epochs",
        "floors",
        "held",
        "id",
        "messages_received",
        "messages_sent",
        "on_overflow",
        "out",
        "rooms",
        "session",
        "session_id",
        "sink",
        "stamp",
        "stats",
        "subscriptions",
        "user_id",
        "view",
    )

    def __init__(
        self,
        conn_id: str,
        user_id: str | None,
        session_id: str | None,
        sink: Sink,
        buffer_limit: int,
        client_addr: str | None = None,
        batch: bool = False,
        on_overflow: Callable[[Connection], None] | None = None,
        deflate: SharedDeflate | None = None,
    ) -> None:
        """``deflate``: the service's compressor when this connection's transport
        negotiated permessage-deflate (fast path only), else None."""
        self.id = conn_id
        self.user_id = user_id
        self.session_id = session_id
        self.client_addr = client_addr
        self.sink = sink
        self.out: OutboundBuffer[Encoded] = OutboundBuffer(buffer_limit)
        self.batch = batch
        self.stats: ServiceStats | None = None  # set by Hub.add
        self.subscriptions: dict[str, Subscription] = {}
        self.rooms: set[str] | None = None
        self.connected_at = time.time()
        self.connected_mono = time.monotonic()
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.stamp = 0  # last fan-out that reached this connection (dedupe)
        # Which rendering of events this connection receives (e.g. its tier); None:
        # the event as published. See Hub.render_view.
        self.view: Hashable | None = None
        # While not None, live events are held here instead of sent (recovery replay
        # in progress); the hub releases them in order afterwards.
        self.held: list[Any] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        # Stream -> epoch this connection's subscriptions were positioned under (set by
        # subscribe); a broker epoch change closes the connections of older epochs.
        self.epochs: dict[Any, str] = {}
        # Stream -> the offset this connection's delivery of it was positioned at by its
        # first subscription (the ack's, or the end of its replay): live delivery never
        # sends an event of the stream at or below it (an instance's reader catching up
        # after a new epoch delivers offsets from before the subscription).
        self.floors: dict[Any, int] = {}
        self.closing = False
        self.on_overflow = on_overflow
        # Security state (security.Session: tier, token expiry, rate limit); None for
        # connections made outside the WebSocket endpoint.
        self.session: Any = None
        # The durable session this connection opened (service/durable_sessions.py), or
        # None: subscriptions and acknowledged positions that outlive the connection.
        self.durable: Any = None
        # The socket's write while it keeps up and nothing is queued, else None: the
        # whole fast path of send() is one attribute test.
        self.direct = sink.direct if sink.writable else None
        self.deflate = deflate

    def send(self, enc: Encoded, key: Hashable | None = None) -> bool:
        """Queue one message without waiting. False if the connection is closing."""
        if self.closing:
            return False
        self.messages_sent += 1
        self.bytes_sent += enc.size
        direct = self.direct
        if direct is not None:
            deflate = self.deflate
            if deflate is None:
                direct(enc.frame)
            else:  # the compressed frame, built by the first connection that wrote it
                z = enc.zframe
                direct(z if z is not None else deflate.frame(enc))
            return True
        out = self.out
        conflated = out.conflated
        if out.push(enc, enc.size, key):
            if out.conflated != conflated and self.stats is not None:
                self.stats.conflated += 1
            self.sink.wake()
            return True
        self.overflow()
        return False

    def next_message(self, behind: bool = True) -> Encoded:
        """Take what goes out next from the buffer (which must not be empty): the oldest
        message, or, for a batching connection whose socket is ``behind``, every queued
        message up to BATCH_MAX_BYTES as one."""
        out = self.out
        enc, replaced = out.pop()
        if replaced:
            enc = Encoded(mark_conflated(enc.payload, replaced))
        if not (self.batch and behind) or not out:
            return enc
        payloads = [enc.payload]
        size = len(enc.payload)
        while out and size + out.peek_size() < BATCH_MAX_BYTES:
            nxt, replaced = out.pop()
            p = nxt.payload if not replaced else mark_conflated(nxt.payload, replaced)
            payloads.append(p)
            size += len(p) + 1
        if len(payloads) == 1:
            return enc
        return Encoded(batch_payload(payloads))

    def lost(self) -> None:
        """The socket is gone: send nothing more (the hub forgets the connection soon)."""
        self.closing = True
        self.direct = None
        self.sink.writable = False
        self.out.clear()
        self.notify_drained()

    def writable_changed(self, writable: bool) -> None:
        """The fast sink's socket stopped (False) or resumed (True) taking data."""
        sink = self.sink
        sink.writable = writable and not self.closing
        if sink.writable:
            self.flush()
        else:
            self.direct = None

    def flush(self) -> None:
        """Move queued messages to the socket while it accepts them (fast sink)."""
        out = self.out
        sink = self.sink
        deflate = self.deflate
        while out and sink.writable:
            # Only called from resume_writing: what is queued waited behind the socket.
            enc = self.next_message()
            sink.write(enc.frame if deflate is None else deflate.frame(enc))
        if not out:
            if sink.writable:
                self.direct = sink.direct
            self.notify_drained()

    def notify_drained(self) -> None:
        w = self.drain_waiter
        if w is not None:
            self.drain_waiter = None
            if not w.done():
                w.set_result(None)

    async def drained(self) -> None:
        """Wait until the outbound buffer is empty or the connection closes.

        Used to pace bulk sends (recovery replay) by what the socket takes."""
        while self.out and not self.closing:
            if self.drain_waiter is None:
                self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def overflow(self) -> None:
        """The client cannot keep up: drop what is queued and close with 4001."""
        self.direct = None
        self.out.clear()
        if self.on_overflow is not None:
            self.on_overflow(self)
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer overflow", abort=True)

    def close(self, code: int, reason: str = "", abort: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self.notify_drained()
        self.sink.close(code, reason, abort)

    def describe(self) -> dict[str, Any]:
        return {
            "connection_id": self.id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "connected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_at)),
            "connected_seconds": round(time.monotonic() - self.connected_mono, 3),
            "subscriptions": [s.describe() for s in self.subscriptions.values()],
            "rooms": sorted(self.rooms) if self.rooms else [],
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "messages_received": self.messages_received,
            "bytes_received": self.bytes_received,
            "buffered_bytes": self.out.size,
            **(self.session.describe() if self.session is not None else {}),
        }
