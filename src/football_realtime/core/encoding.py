"""Serialise once: JSON bytes for an event and the WebSocket frame that carries them.

Server-to-client frames are unmasked (RFC 6455 §5.1), so one frame's bytes can be
written to every transport that receives the event. A compressed frame
(:func:`deflated_text_frame`, permessage-deflate without server context takeover,
RFC 7692) depends on nothing but its payload, so it too is built once and shared.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson

from .events import utc_now_iso


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def text_frame(payload: bytes) -> bytes:
    """A single unfragmented, unmasked text frame (FIN=1, opcode=1) carrying ``payload``."""
    return _frame(0x81, payload)


def _frame(b0: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


#: What a sync flush ends with; RFC 7692 §7.2.1 removes it from a message (the
#: receiver appends it again before inflating).
DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: The LZ77 window of compressed frames: the RFC's default (no ``server_max_window_bits``).
DEFLATE_WINDOW_BITS = 15
#: zlib level of compressed frames: zlib's default, the usual speed/size balance.
DEFLATE_LEVEL = 6


def deflate_message(payload: bytes, level: int = DEFLATE_LEVEL) -> bytes:
    """``payload`` compressed as one permessage-deflate message on its own (a fresh
    compressor: no context taken over from earlier messages), tail removed.

    The receiver inflates ``data + DEFLATE_TAIL`` with a raw-deflate decompressor
    (``zlib.decompressobj(-15)``)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -DEFLATE_WINDOW_BITS)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # a sync flush always ends with DEFLATE_TAIL


def deflated_text_frame(payload: bytes, level: int = DEFLATE_LEVEL) -> bytes:
    """A single unfragmented, unmasked text frame with RSV1 set (compressed, RFC 7692
    §6) whose data is :func:`deflate_message` of ``payload``. Valid on any connection
    that negotiated permessage-deflate with ``server_no_context_takeover`` and a
    server window of 15 bits (the default)."""
    return _frame(0xC1, deflate_message(payload, level))


def server_message(event_type: str, data: dict[str, Any]) -> bytes:
    """A connection-level message (``connection_status``, ``message_ack``, ``error``...)."""
    # OPT_NON_STR_KEYS: replies such as get_stats carry counters keyed by EventType (a
    # str enum), which orjson refuses as keys otherwise. Not on the event hot path.
    return orjson.dumps(
        {"event_type": event_type, "data": data, "timestamp": utc_now_iso()},
        option=orjson.OPT_NON_STR_KEYS,
    )


def batch_payload(payloads: list[bytes]) -> bytes:
    """Several messages in one frame (opt-in ``batch=1``): a JSON array of the messages,
    each exactly as it would have been sent alone, oldest first."""
    return b"[" + b",".join(payloads) + b"]"


def mark_conflated(payload: bytes, replaced: int) -> bytes:
    """``payload`` (a JSON object) with ``"conflated": replaced`` added: this message
    replaced that many queued messages with the same conflation key."""
    return b'%s,"conflated":%d}' % (payload[:-1], replaced)
