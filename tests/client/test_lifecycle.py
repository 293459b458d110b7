"""Lifecycle and options: the client's state and settings, without a socket."""

from __future__ import annotations

import asyncio

import pytest

from football_realtime.client import RealtimeClient
from football_realtime.client.dispatch import Dispatcher
from football_realtime.client.errors import ClientClosed, RequestTimeout
from football_realtime.client.lifecycle import Lifecycle
from football_realtime.client.models import ClientState
from football_realtime.client.subscription import Subscription, SubscriptionRegistry

from .parts import Client, Owner, options


def lifecycle() -> tuple[Lifecycle, SubscriptionRegistry]:
    registry = SubscriptionRegistry()
    return Lifecycle(Dispatcher(options(), registry), registry), registry


async def test_not_usable_before_start_nor_after_closing() -> None:
    life, _ = lifecycle()
    with pytest.raises(RuntimeError, match="connect first"):
        life.check_usable()
    life.start()
    life.check_usable()
    with pytest.raises(RuntimeError, match="already called"):
        life.start()
    assert life.begin_closing() and not life.begin_closing()
    with pytest.raises(ClientClosed, match="the client is closed"):
        life.check_usable()


async def test_a_failed_client_raises_its_error_and_fails_waiting_subscriptions() -> None:
    life, registry = lifecycle()
    life.start()
    sub = Subscription(Owner(), registry.new_id(), "predictions", {}, False, 10)
    registry.add(sub)
    life.set_state(ClientState.OPEN)
    gone = ClientClosed("terminal")
    life.fail(gone)
    assert life.state is ClientState.CLOSED and life.error is gone
    assert sub._ready.exception() is gone
    assert life.established.is_set()  # request() waiters wake up and see the end
    life.mark_closed()
    with pytest.raises(ClientClosed, match="terminal"):
        life.check_usable()


async def test_wait_open_returns_the_connection_once_it_is_set_up() -> None:
    c = Client()
    c.life.start()
    loop = asyncio.get_running_loop()
    with pytest.raises(RequestTimeout, match="not connected"):
        await c.life.wait_open(loop.time() + 0.01)
    conn, ws = c.connect()
    waiter = asyncio.create_task(c.life.wait_open(loop.time() + 5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await c.open(conn, ws)
    assert await waiter is conn
    c.life.detach()
    assert c.life.conn is None and not c.life.established.is_set()


def test_options_are_checked_and_shared_with_the_parts() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        RealtimeClient("http://localhost:8000/realtime/ws")
    with pytest.raises(ValueError, match="max_reconnect_attempts"):
        RealtimeClient("ws://h/realtime/ws", max_reconnect_attempts=0)
    with pytest.raises(ValueError, match="max_delay must be >= min_delay"):
        RealtimeClient("ws://h/realtime/ws", min_reconnect_delay=2, max_reconnect_delay=1)
    client = RealtimeClient("ws://h/realtime/ws", request_timeout=4, connect_kwargs={"a": 1})
    assert (client.request_timeout, client.connect_kwargs) == (4, {"a": 1})
    assert (client.backoff.min_delay, client.backoff.max_delay) == (0.5, 5.0)
    client.request_timeout = 2.5
    assert client.request_timeout == 2.5
    assert client._options.request_timeout == 2.5  # what the parts read
    other = RealtimeClient("ws://h/realtime/ws")
    assert other.request_timeout == 10.0  # per client, not per class
    assert client.state is ClientState.CLOSED and not client.closed
