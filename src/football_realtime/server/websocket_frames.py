"""Reading frames: what websockets' sans-I/O parser reports, acted on.

Text is validated frame by frame (an invalid fragment fails at once with 1007, RFC
6455 §8.1) and decoded once; at most ``max_fragments`` frames per message (1009); a
token bucket on client pings (1008). A close frame in the middle of a fragmented
message drops the partial message and is echoed (RFC 6455 §5.4 lets control frames
interleave; websockets would fail the connection with 1002): frame boundaries are
followed in the bytes received, and an empty final continuation frame is fed to
websockets before such a close.
"""

from __future__ import annotations

import codecs
import zlib
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..core.limits import TokenBucket
from .websocket_keepalive import Keepalive

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: An empty final continuation frame (masked, as from a client).
_END_OF_MESSAGE = b"\x80\x80\x00\x00\x00\x00"
#: What a compressed message's end lacks (RFC 7692 §7.2.2), put back before inflating.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


class FrameReader(Keepalive):
    __slots__ = ()

    def single_text(self, conn: ServerProtocol, data: bytes) -> bool:
        """The common read: exactly one complete, unfragmented text frame (masked, at
        most 64 KiB and the message size limit; compressed when the connection
        negotiated permessage-deflate with ``client_no_context_takeover``), read between
        frames. Such a frame is unmasked, inflated and decoded here instead of going
        through websockets' parser, which then never sees it: it reads at frame
        boundaries, and none of its state depends on a frame like this one (with
        ``client_no_context_takeover`` websockets too inflates each message with a
        fresh inflater). The message is offered to the app's ``on_text`` while the app
        waits in ``receive``, else queued. False: anything else (control frames,
        fragments, several frames or part of one, other RSV bits, a connection not open
        or closing, a message that inflates past the limit or does not inflate), left
        to websockets, which applies every rule and limit."""
        n = len(data)
        if n < 6 or self.frag_skip or self.frag_tail or self.frag_open:
            return False
        b0 = data[0]
        if b0 != 0x81 and (b0 != 0xC1 or not self.inflate_bits):
            return False
        length = data[1] ^ 0x80  # the mask bit must be set: client frames are masked
        if length < 126:
            head = 6
        elif length == 126 and n >= 8:
            length = (data[2] << 8) | data[3]
            head = 8
        else:
            return False  # unmasked (websockets fails it with 1002), or over 64 KiB
        max_size = self.layer.max_size
        if (
            head + length != n
            or (max_size is not None and length > max_size)
            or self.close_sent
            or conn.state is not State.OPEN
        ):
            return False
        if length:
            mask = data[head - 4 : head] * ((length >> 2) + 1)
            payload = (
                int.from_bytes(data[head:], "little") ^ int.from_bytes(mask[:length], "little")
            ).to_bytes(length, "little")
        else:
            payload = b""
        if b0 == 0xC1:
            inflater = zlib.decompressobj(-self.inflate_bits)
            try:
                payload = inflater.decompress(payload + _DEFLATE_TAIL, max_size or 0)
            except zlib.error:
                return False
            if inflater.unconsumed_tail:
                return False  # past the size limit: websockets closes with 1009
        try:
            text = str(payload, "utf-8")
        except UnicodeDecodeError as exc:
            self.fail(1007, f"invalid UTF-8 at position {exc.start}")
            return True
        on_text = self.on_text
        if on_text is not None and self.inbox.waiting() and on_text(text):
            return True
        self.deliver({"type": "websocket.receive", "text": text})
        return True

    def boundaries(self, data: bytes) -> bytes:
        """Follow frame boundaries in what the client sends, to find a close frame in
        the middle of a fragmented message: an empty final continuation frame is put
        before it, so websockets ends the message (dropped in handle_cont) and echoes
        the close. Bytes of a frame header not complete yet are held back until it is."""
        if self.frag_tail:
            data = self.frag_tail + data
            self.frag_tail = b""
        pos = self.frag_skip
        n = len(data)
        if pos >= n:
            self.frag_skip = pos - n
            return data
        pieces: list[bytes] | None = None
        start = 0
        while pos < n:
            if n - pos < 2:
                break
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            head = 2 + (4 if data[pos + 1] & 0x80 else 0)
            if length == 126:
                head += 2
            elif length == 127:
                head += 8
            if n - pos < head:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            opcode = b0 & 0x0F
            if opcode == 0x8:
                if self.frag_open:
                    if pieces is None:
                        pieces = []
                    pieces += [data[start:pos], _END_OF_MESSAGE]
                    start = pos
                    self.partial_dropped = True
                    self.frag_open = False
            elif opcode in (0x1, 0x2):
                self.frag_open = not b0 & 0x80
            elif opcode == 0x0 and b0 & 0x80:
                self.frag_open = False
            pos += head + length
        if pos > n:
            self.frag_skip = pos - n
        else:
            self.frag_skip = 0
            if pos < n:
                self.frag_tail = data[pos:]
                data = data[:pos]
        if pieces is not None:
            pieces.append(data[start:])
            return b"".join(pieces)
        return data

    def handle_events(self, events: list[Any]) -> bool:
        """Act on the frames of one read; True if the peer's close frame was among them."""
        # websockets has already queued a pong for every ping in this read: charge the
        # pings up front.
        pings = 0
        for e in events:
            if e.opcode is Opcode.PING:
                pings += 1
        if pings:
            layer = self.layer
            now = layer.loop.time()
            bucket = self.pings
            if bucket is None:
                bucket = self.pings = TokenBucket(layer.max_pings_per_second, layer.ping_burst, now)
            if not all([bucket.take(now) for _ in range(pings)]):
                assert self.conn is not None
                self.conn.data_to_send()  # drop the queued pongs
                self.fail(1008, "too many pings")
                return False
        peer_closed = False
        for event in events:
            opcode = event.opcode
            if opcode is Opcode.TEXT:
                self.handle_text(event)
            elif opcode is Opcode.CONT:
                self.handle_cont(event)
            elif opcode is Opcode.BINARY:
                self.handle_bytes(event)
            elif opcode is Opcode.PONG:
                self.handle_pong(event)
            elif opcode is Opcode.CLOSE:
                peer_closed = True
                self.handle_close(event)
            # PING: websockets queued the pong; flush writes it.
        return peer_closed

    def flush(self, conn: ServerProtocol, peer_closed: bool) -> None:
        out = conn.data_to_send()
        if not out:
            return
        data = b"".join(out)
        if data and not self.transport.is_closing():
            self.transport.write(data)
        if b"" not in out:  # websockets.protocol.SEND_EOF: close the TCP connection
            return
        if not self.close_sent:
            # websockets ended the connection: the peer's close frame (echoed), or a
            # failure (framing, size, ...; its close frame sent). Nothing more is read;
            # the connection is CLOSED and its close codes known.
            conn.receive_eof()
            if peer_closed:
                code, reason = conn.close_code, conn.close_reason
            else:
                sent = conn.close_exc.sent
                code, reason = (sent.code, sent.reason) if sent is not None else (1006, "")
                self.close_sent = True
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.close()

    def deliver(self, message: dict[str, Any]) -> None:
        if self.close_sent:
            # The app is past `websocket.close`: discard the message rather than queue
            # it, so reads stay active until the peer's close reply arrives.
            return
        self.inbox.put_nowait(message)
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    # Text is validated frame by frame (an invalid fragment fails at once with 1007,
    # RFC 6455 §8.1) and decoded once.

    def handle_text(self, event: Frame) -> None:
        if self.close_sent:
            return
        self.text = True
        if event.fin:  # the common case: one frame, decoded at once
            try:
                text = str(event.data, "utf-8")
            except UnicodeDecodeError as exc:
                self.fail(1007, f"invalid UTF-8 at position {exc.start}")
                return
            self.deliver({"type": "websocket.receive", "text": text})
            return
        self.utf8 = _Utf8Decoder()
        self.frames = []
        self._text_piece(event)

    def handle_bytes(self, event: Frame) -> None:
        if self.close_sent:
            return
        self.text = False
        if event.fin:
            self.deliver({"type": "websocket.receive", "bytes": bytes(event.data)})
        else:
            self.frames = [event.data]

    def handle_cont(self, event: Frame) -> None:
        frames = self.frames
        if self.partial_dropped:
            # The end put before a close frame: the partial message is dropped.
            self.partial_dropped = False
            self.frames = self.utf8 = None
            return
        if self.close_sent or frames is None:
            return
        if len(frames) >= self.layer.max_fragments:
            self.fail(1009, f"message has more than {self.layer.max_fragments} fragments")
            return
        if self.text:
            self._text_piece(event)
            return
        frames.append(event.data)
        if event.fin:
            self.frames = None
            self.deliver({"type": "websocket.receive", "bytes": b"".join(frames)})

    def _text_piece(self, event: Frame) -> None:
        frames = self.frames
        assert self.utf8 is not None and frames is not None  # set by handle_text
        try:
            piece = self.utf8.decode(event.data, event.fin)
        except UnicodeDecodeError as exc:
            self.fail(1007, f"invalid UTF-8 at position {exc.start}")
            return
        frames.append(piece)
        if event.fin:
            self.frames = self.utf8 = None
            self.deliver({"type": "websocket.receive", "text": "".join(frames)})

    def handle_close(self, event: Frame) -> None:
        if self.close_sent and self.close_timer is not None:
            # The peer answered our close frame: the closing handshake is complete.
            self.close_timer.cancel()
            self.close_timer = None
            self.transport.close()
        # Otherwise websockets queued the echo and the end of the stream: flush sends
        # both and tells the app the peer's code and reason.

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection from the reading side: close frame, then drop TCP."""
        conn = self.conn
        assert conn is not None
        self.frames = self.utf8 = None
        if self.close_sent:
            return
        conn.fail(code, reason)
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(conn.data_to_send()))
        self.close_sent = True
        self.transport.close()


__all__ = ["FrameReader"]
