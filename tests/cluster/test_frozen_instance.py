"""A client behind a frozen instance (SIGSTOP: the TCP connection stays up, nothing
answers) leaves it for another instance within the bound its default options promise
(docs/reliability.md): ``heartbeat_interval + heartbeat_timeout`` of silence, then the
first reconnect delay (at most ``2 * min_reconnect_delay``).

The instances sit behind a round-robin proxy, so the reconnect lands on the other one.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from football_realtime.client import RealtimeClient
from football_realtime.client.models import ClientState

from ..cluster_support import instances
from ..support import TIMEOUT, token
from ..tcp_proxy import Proxy

pytestmark = pytest.mark.timeout(90)

#: Defaults: 10 s heartbeat interval + 5 s timeout + at most 1 s backoff, and room for a
#: loaded machine (the handshake and resubscription on the other instance).
BOUND = 10.0 + 5.0 + 1.0 + TIMEOUT


async def test_a_client_leaves_a_frozen_instance_within_the_default_bound() -> None:
    with instances(["a", "b"], "memory://") as (a, b):
        proxy = Proxy([a.port, b.port])
        await proxy.start()
        client = RealtimeClient(
            f"ws://127.0.0.1:{proxy.port}/realtime/ws", user_id="frozen", token=token("frozen")
        )
        try:
            await client.connect()
            await client.subscribe("matches", match_ids=[1])
            first = client.connection_info["instance_id"]
            frozen = a if first == "a" else b
            assert frozen.proc.pid
            loop = asyncio.get_running_loop()
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            t0 = loop.time()
            try:
                while not (
                    client.state is ClientState.OPEN
                    and client.connection_info.get("instance_id") != first
                ):
                    assert loop.time() - t0 < BOUND, (
                        f"still on the frozen instance {first} after {BOUND:.0f} s "
                        f"(state {client.state})"
                    )
                    await asyncio.sleep(0.05)
                took = loop.time() - t0
            finally:
                os.kill(frozen.proc.pid, signal.SIGCONT)
            assert took >= 10.0, f"left after {took:.1f} s: before any heartbeat was due?"
        finally:
            await client.close()
            await proxy.close()
