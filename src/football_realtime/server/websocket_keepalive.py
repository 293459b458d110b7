"""Keepalive pings of every connection on the layer's shared timer wheel.

A ping every ``ws_ping_interval`` seconds (less the last round trip), a deadline of
``ws_ping_timeout`` for its pong; a connection that answers late is kept if it sent
anything since the ping (browsers cannot send pings, but they send application
heartbeats). A deadline is an entry in one of the wheel's sets, not a loop timer.
"""

from __future__ import annotations

import random
import struct

from websockets.frames import Frame

from .websocket_state import ConnectionState


class Keepalive(ConnectionState):
    __slots__ = ()

    def start_keepalive(self) -> None:
        interval = self.layer.ping_interval
        if interval is not None and interval > 0:
            self.schedule_ping()

    def stop_keepalive(self) -> None:
        self.layer.keepalive.remove(self, self.keepalive_slot)
        self.keepalive_slot = 0
        self.pending_ping = None

    def schedule_ping(self) -> None:
        layer = self.layer
        assert layer.ping_interval is not None
        delay = max(0.0, layer.ping_interval - self.last_ping_rtt)
        self.keepalive_slot = layer.keepalive.add(
            self, layer.loop.time() + delay, self.keepalive_slot
        )

    def keepalive_due(self) -> None:
        if self.pending_ping is None:
            self.send_keepalive_ping()
        else:
            self.keepalive_timeout()

    def send_keepalive_ping(self) -> None:
        conn = self.conn
        if conn is None or self.close_sent or self.transport.is_closing():
            return
        layer = self.layer
        # Random payload: handle_pong ignores stale or unsolicited pongs.
        self.pending_ping = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = layer.loop.time()
        conn.send_ping(self.pending_ping)
        self.transport.write(b"".join(conn.data_to_send()))
        if layer.ping_timeout is not None:
            self.keepalive_slot = layer.keepalive.add(
                self, self.ping_sent_at + layer.ping_timeout, self.keepalive_slot
            )
        else:
            self.schedule_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping is None or bytes(event.data) != self.pending_ping:
            return
        self.last_ping_rtt = self.layer.loop.time() - self.ping_sent_at
        self.pending_ping = None
        if self.layer.ping_timeout is not None:
            self.schedule_ping()

    def keepalive_timeout(self) -> None:
        self.pending_ping = None
        conn = self.conn
        if conn is None or self.close_sent or self.transport.is_closing():
            return
        # Anything received since the ping proves the peer alive (browsers cannot send
        # pings, but they send application heartbeats).
        if self.last_received > self.ping_sent_at:
            self.schedule_ping()
            return
        conn.fail(1011, "keepalive ping timeout")
        self.transport.write(b"".join(conn.data_to_send()))
        self.close_sent = True
        self.transport.close()


__all__ = ["Keepalive"]
