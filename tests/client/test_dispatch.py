"""Dispatcher: handlers, the client feed and subscription feeds, in order; no socket."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from football_realtime.client.dispatch import Delivery, Dispatcher
from football_realtime.client.errors import ClientClosed
from football_realtime.client.feed import Feed
from football_realtime.client.models import ClientState
from football_realtime.client.subscription import (
    Item,
    RecoveryFailed,
    Subscription,
    SubscriptionRegistry,
)

from .parts import Owner, acked, event, options


async def drain(feed: Feed[Item] | None) -> list[Any]:
    assert feed is not None
    return [item async for item in feed]


async def run(d: Dispatcher, *deliveries: Delivery, error: BaseException | None = None) -> None:
    task = asyncio.create_task(d.run())
    for delivery in deliveries:
        await d.put(delivery)
    await d.stop(error)
    await asyncio.wait_for(task, 5)


def subscribe(registry: SubscriptionRegistry, match_ids: list[int] | None = None) -> Subscription:
    sub = Subscription(Owner(), registry.new_id(), "predictions", {}, False, 100)
    registry.add(acked(sub, match_ids))
    return sub


async def test_handlers_run_in_order_and_a_failing_one_does_not_stop_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = Dispatcher(options(max_queue=0), SubscriptionRegistry())
    calls: list[str] = []

    async def typed(item: Any) -> None:
        calls.append(f"typed {item.offset}")

    def broken(item: Any) -> None:
        raise ValueError("handler bug")

    d.on("prediction_created", typed)
    d.on("prediction_created", broken)
    d.on("*", lambda item: calls.append(f"any {item.offset}"))
    d.on("match_started", lambda item: calls.append("never"))
    gone = lambda item: calls.append("removed")  # noqa: E731
    d.on("*", gone)
    d.off("*", gone)
    d.off("*", gone)  # twice: no error
    assert d.feed is None
    with caplog.at_level(logging.ERROR, "football_realtime.client"):
        await run(d, (event(1), None, False), (event(2), None, False))
    assert calls == ["typed 1", "any 1", "typed 2", "any 2"]
    failures = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert [str(f) for f in failures] == ["handler bug", "handler bug"]


async def test_an_event_reaches_the_client_feed_once_and_each_matching_subscription() -> None:
    registry = SubscriptionRegistry()
    one = subscribe(registry, [1])
    two = subscribe(registry)
    other = subscribe(registry, [2])
    d = Dispatcher(options(), registry)
    e1, e2, direct = event(1, match_id=1), event(2, match_id=2), event(None, stream=None)
    await run(d, (e1, None, False), (e2, None, False), (direct, None, False))
    assert await drain(d.feed) == [e1, e2, direct]
    assert await drain(one._feed) == [e1]
    assert await drain(two._feed) == [e1, e2]
    assert await drain(other._feed) == [e2]


async def test_events_from_before_a_subscription_reach_nobody() -> None:
    registry = SubscriptionRegistry()
    sub = subscribe(registry)
    sub._start["predictions"] = ("e1", 10)
    d = Dispatcher(options(), registry)
    old, new = event(10), event(11)
    await run(d, (old, None, False), (new, None, False))
    assert await drain(d.feed) == [new]
    assert await drain(sub._feed) == [new]


async def test_snapshot_state_for_one_subscription_only() -> None:
    registry = SubscriptionRegistry()
    asking, other = subscribe(registry), subscribe(registry)
    d = Dispatcher(options(), registry)
    state = event(5)
    await run(d, (state, asking, True))
    assert await drain(asking._feed) == [state]
    assert await drain(other._feed) == []
    assert await drain(d.feed) == [state]


async def test_a_recovery_notice_goes_to_its_subscription_and_the_callback() -> None:
    registry = SubscriptionRegistry()
    sub, other = subscribe(registry), subscribe(registry)
    called: list[RecoveryFailed] = []
    handled: list[RecoveryFailed] = []
    d = Dispatcher(options(on_recovery_failed=called.append), registry)
    d.on("recovery_failed", handled.append)
    notice = RecoveryFailed(sub, ("predictions",), "epoch changed")
    await run(d, (notice, None, False))
    assert called == handled == [notice]
    assert await drain(d.feed) == [notice]
    assert await drain(sub._feed) == [notice]
    assert await drain(other._feed) == []


async def test_state_changes_reach_client_state_handlers_only_when_there_are_some() -> None:
    d = Dispatcher(options(), SubscriptionRegistry())
    d.state_changed(ClientState.OPEN)  # nobody listens: not queued
    states: list[ClientState] = []
    d.on("client_state", states.append)
    d.state_changed(ClientState.RECONNECTING)
    await run(d)
    assert states == [ClientState.RECONNECTING]
    assert await drain(d.feed) == []


async def test_stop_ends_every_feed_after_what_was_queued_with_the_error() -> None:
    registry = SubscriptionRegistry()
    sub = subscribe(registry)
    d = Dispatcher(options(), registry)
    e = event(1)
    stop = ClientClosed("gone")
    await run(d, (e, None, False), error=stop)
    with pytest.raises(ClientClosed, match="gone"):
        await drain(d.feed)
    assert d.feed is not None and len(d.feed) == 0
    with pytest.raises(ClientClosed):
        await drain(sub._feed)


async def test_a_full_queue_refuses_an_offer() -> None:
    d = Dispatcher(options(), SubscriptionRegistry())
    delivery: Delivery = (event(1), None, False)
    accepted = 0
    while d.offer(delivery):
        accepted += 1
    assert accepted == 1024
