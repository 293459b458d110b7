"""Serialise once: JSON bytes for an event and the WebSocket frame that carries them.

Server-to-client frames are unmasked (RFC 6455 §5.1), so one frame's bytes can be
written to every transport that receives the event.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from .events import utc_now_iso


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def text_frame(payload: bytes) -> bytes:
    """A single unfragmented, unmasked text frame (FIN=1, opcode=1) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


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
