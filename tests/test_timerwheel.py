"""The shared timer wheel behind keepalive and token expiry deadlines."""

from __future__ import annotations

import asyncio

import pytest

from football_realtime.timerwheel import TimerWheel

from .client_support import until as _until


async def test_items_fire_once_in_deadline_order_never_early() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    wheel: TimerWheel[str] = TimerWheel(loop, 0.01, lambda item: fired.append((item, loop.time())))
    start = loop.time()
    deadlines = {"c": start + 0.09, "a": start + 0.03, "b": start + 0.06}
    for item, when in deadlines.items():
        wheel.add(item, when)
    assert len(wheel) == 3
    await _until(lambda: len(fired) == 3)
    assert [item for item, _ in fired] == ["a", "b", "c"]
    for item, at in fired:
        assert at >= deadlines[item] - 1e-6
    assert len(wheel) == 0
    await asyncio.sleep(0.05)
    assert len(fired) == 3


async def test_removed_and_moved_items() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    wheel: TimerWheel[str] = TimerWheel(loop, 0.01, fired.append)
    now = loop.time()
    gone = wheel.add("gone", now + 0.02)
    moved = wheel.add("moved", now + 0.02)
    wheel.add("marker", now + 0.08)
    wheel.remove("gone", gone)
    wheel.remove("gone", gone)  # twice is harmless
    wheel.remove("never", 0)
    moved = wheel.add("moved", now + 0.05, moved)  # from its first slot to a later one
    await _until(lambda: "marker" in fired)
    assert fired == ["moved", "marker"]


async def test_an_earlier_deadline_rearms_the_timer() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    wheel: TimerWheel[str] = TimerWheel(loop, 0.01, fired.append)
    wheel.add("late", loop.time() + 30)
    wheel.add("soon", loop.time() + 0.02)
    await _until(lambda: fired == ["soon"])
    assert len(wheel) == 1
    wheel.close()
    assert len(wheel) == 0


async def test_a_failing_callback_does_not_stop_the_others_and_callbacks_may_reschedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    wheel: TimerWheel[str]

    def due(item: str) -> None:
        fired.append(item)
        if item == "bad":
            raise RuntimeError("boom")
        if item == "again" and fired.count("again") == 1:
            wheel.add("again", loop.time())  # due at once: the next run picks it up

    wheel = TimerWheel(loop, 0.01, due)
    when = loop.time() + 0.02
    for item in ("bad", "good", "again"):
        wheel.add(item, when)
    await _until(lambda: fired.count("again") == 2)
    assert sorted(fired) == ["again", "again", "bad", "good"]
    assert "timer callback failed" in caplog.text


def test_tick_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            TimerWheel(loop, 0, print)
    finally:
        loop.close()
