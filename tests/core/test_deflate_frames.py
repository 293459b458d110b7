"""The pure frame-compression helper (core/encoding.py): a permessage-deflate message
compressed on its own (RFC 7692 §7.2.1), as a shared server frame with RSV1 set."""

from __future__ import annotations

import struct
import zlib

from hypothesis import given
from hypothesis import strategies as st

from football_realtime.core.encoding import (
    DEFLATE_TAIL,
    deflate_message,
    deflated_text_frame,
    text_frame,
)


def inflate(data: bytes) -> bytes:
    """What a receiver that negotiated server_no_context_takeover does: a fresh raw
    inflater per message, the tail appended."""
    d = zlib.decompressobj(-15)
    out = d.decompress(data + DEFLATE_TAIL)
    assert not d.unconsumed_tail
    return out


def parse(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked server frame, checking its length."""
    n = frame[1]
    assert not n & 0x80  # server frames are never masked
    if n == 126:
        (n,) = struct.unpack("!H", frame[2:4])
        body = frame[4:]
    elif n == 127:
        (n,) = struct.unpack("!Q", frame[2:10])
        body = frame[10:]
    else:
        body = frame[2:]
    assert len(body) == n
    return frame[0], body


def test_a_message_round_trips_through_a_fresh_inflater() -> None:
    payload = b'{"event_type":"odds_updated","data":{"match_id":1,"home_odds":1.95}}'
    assert inflate(deflate_message(payload)) == payload


def test_the_sync_flush_tail_is_removed() -> None:
    payload = b"x" * 1000
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    full = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert full.endswith(DEFLATE_TAIL)
    assert deflate_message(payload) == full[:-4]


def test_the_frame_is_final_text_with_rsv1_and_the_same_length_encoding_as_plain() -> None:
    for size in (0, 10, 125, 126, 300, 65535, 65536, 200_000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        b0, body = parse(deflated_text_frame(payload))
        assert b0 == 0xC1  # FIN, RSV1 (compressed), opcode 1
        assert inflate(body) == payload
        plain_b0, plain_body = parse(text_frame(payload))
        assert plain_b0 == 0x81 and plain_body == payload


def test_messages_do_not_depend_on_each_other() -> None:
    # No context takeover: the same payload gives the same bytes whatever came before.
    a = deflate_message(b'{"a":1,"b":"repeated text repeated text"}')
    deflate_message(b"something else entirely")
    assert deflate_message(b'{"a":1,"b":"repeated text repeated text"}') == a


@given(st.binary(max_size=70_000), st.integers(min_value=0, max_value=9))
def test_any_payload_round_trips(payload: bytes, level: int) -> None:
    b0, body = parse(deflated_text_frame(payload, level))
    assert b0 == 0xC1
    assert inflate(body) == payload
