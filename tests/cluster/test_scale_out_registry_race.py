"""The cluster registry while Redis stalls: a connection that closes during a flush."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import orjson
import pytest
import redis
import websockets

from ..cluster_support import instances, with_token
from ..redis_server import RedisServer
from ..support import TIMEOUT

pytestmark = pytest.mark.timeout(60)


async def test_connection_closed_while_the_flush_waits_on_redis_is_removed() -> None:
    # A long heartbeat, so the flush Redis stalls is the one the new connection woke.
    with (
        RedisServer() as srv,
        instances(["x"], srv.url, REALTIME_CLUSTER_HEARTBEAT_INTERVAL="5") as (x,),
    ):
        client = redis.Redis(host="127.0.0.1", port=srv.port)
        assert srv.proc is not None
        pid = srv.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            ws = await websockets.connect(with_token(x.ws_url), open_timeout=TIMEOUT)
            hello = await asyncio.wait_for(ws.recv(), TIMEOUT)
            cid = str(orjson.loads(hello)["data"]["connection_id"])
            await asyncio.sleep(0.2)  # the registry's flush now waits on Redis
            ws.transport.abort()
            await asyncio.sleep(0.3)  # the instance saw the connection go
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 3
        while client.hexists("frt:conns:x", cid):
            assert time.monotonic() < deadline, "the closed connection stays registered"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        log = x.log()
        assert "KeyError" not in log and "flush failed" not in log, log[-3000:]
        client.close()
