"""An in-memory :class:`~football_realtime.service.connection.Sink` for testing the
service without sockets: it records the frames a connection writes and lets the test
play a socket that stops and resumes taking data."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from football_realtime.brokers.base import PublishedEvent
from football_realtime.core.encoding import dumps
from football_realtime.core.events import EVENT_STREAM, EventType
from football_realtime.service.connection import Connection, SharedDeflate


def frame_payload(frame: bytes) -> bytes:
    """The payload of one unmasked server text frame; a compressed one (RSV1,
    permessage-deflate without context takeover) inflated."""
    assert frame[0] in (0x81, 0xC1), frame[:2]
    n = frame[1] & 0x7F
    if n == 126:
        body = frame[4:]
    elif n == 127:
        body = frame[10:]
    else:
        body = frame[2:]
    if frame[0] & 0x40:
        return zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
    return body


class MemorySink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writable = True
        self.direct = self.frames.append
        self.closed: tuple[int, str, bool] | None = None
        self.wakes = 0

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def wake(self) -> None:
        self.wakes += 1

    def close(self, code: int, reason: str, abort: bool) -> None:
        self.closed = (code, reason, abort)

    def messages(self) -> list[Any]:
        """Every message received so far, decoded (a batch frame is a JSON list)."""
        return [orjson.loads(frame_payload(f)) for f in self.frames]


def connection(
    conn_id: str = "c1",
    *,
    user_id: str | None = None,
    buffer_limit: int = 1 << 20,
    batch: bool = False,
    view: str | None = None,
    deflate: SharedDeflate | None = None,
) -> tuple[Connection, MemorySink]:
    sink = MemorySink()
    conn = Connection(conn_id, user_id, None, sink, buffer_limit, batch=batch, deflate=deflate)
    conn.view = view
    return conn, sink


def published(event_type: EventType, offset: int, **data: Any) -> PublishedEvent:
    stream = EVENT_STREAM[event_type]
    envelope = {
        "event_type": event_type.value,
        "data": data,
        "timestamp": "2026-12-03T00:00:00Z",
        "stream": stream.value,
        "offset": offset,
    }
    return PublishedEvent(stream, offset, event_type, data, dumps(envelope))
