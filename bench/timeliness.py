"""What tier timeliness costs on the fan-out path, and how exact its delays are.

Fan-out (in process, the service's own hub and connections on a sink that discards the
frames, CPU time per delivery, median of ``--reps``; each repetition runs every target once, in
turn, each in a fresh process):

* ``no rule``: no tier has a timeliness rule (the default policy): the hub has no
  timeliness step;
* ``rule elsewhere``: the free tier delays ``matches`` 30 s, and every subscriber is
  premium: connections in tiers without a delay, whose cost must not change;
* ``delayed view``: every subscriber is free: each event enters the view's delay line
  and is released by its timer (fired here at once, the clock moved past the delay):
  the delivery plus the line;
* with ``--compare-src DIR``: ``no rule`` again with the ``src`` of another checkout
  (e.g. ``git archive <commit> src``), in the same run.

Exactness: on a real event loop, events of a stream delayed ``--delay`` seconds go
through a delay line with its loop timer; the lateness of each release against its due
time (publish time + delay) is reported (median, p99, max).

    python bench/timeliness.py [--n 10000] [--events 300] [--reps 5] [--compare-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SCENARIOS = ("no rule", "rule elsewhere", "delayed view")


class DiscardSink:
    """A socket that always takes everything at once."""

    writable = True

    def __init__(self) -> None:
        self.bytes = 0

    def direct(self, frame: bytes) -> None:
        self.bytes += len(frame)

    def write(self, frame: bytes) -> None:
        self.bytes += len(frame)

    def wake(self) -> None:
        pass

    def close(self, code: int, reason: str, abort: bool) -> None:
        pass


def fanout(scenario: str, n: int, events: int, reps: int) -> list[float]:
    """CPU µs per delivery, one figure per repetition."""
    from football_realtime.brokers.base import PublishedEvent
    from football_realtime.core.encoding import dumps
    from football_realtime.core.events import EventType, SubscriptionType
    from football_realtime.core.permissions import TierPolicy
    from football_realtime.core.subscriptions import SubscriptionFilter
    from football_realtime.service.connection import Connection
    from football_realtime.service.hub import Hub
    from football_realtime.service.views import TierViews
    from football_realtime.stats import ServiceStats

    tiers: dict[str, Any] = {"free": {}, "premium": {}}
    if scenario != "no rule":
        tiers["free"] = {"delay_seconds": {"matches": 30}}
    policy = TierPolicy.from_config(tiers, "free")
    fake_now = [time.time()]
    kwargs: dict[str, Any] = {}
    timers: list[tuple[float, Any]] = []
    if scenario != "no rule":
        from football_realtime.service.timed_views import TimedViews

        class Timers:
            def call_at(self, when: float, callback: Any) -> Any:
                timers.append((when, callback))

                class H:
                    def cancel(self) -> None:
                        pass

                return H()

        kwargs["timing"] = TimedViews(policy, Timers(), clock=lambda: fake_now[0])
    hub = Hub(
        ServiceStats(),
        max_subscriptions=10,
        max_rooms=5,
        render_view=TierViews(policy).render,
        **kwargs,
    )
    view = "free" if scenario == "delayed view" else None
    for i in range(n):
        conn = Connection(f"c{i}", f"u{i}", None, DiscardSink(), 1 << 20)  # type: ignore[arg-type]
        conn.view = view
        hub.add(conn)
        hub.subscribe(conn, SubscriptionType.MATCHES, SubscriptionFilter())
    results = []
    offset = 0
    for _ in range(reps):
        evs = []
        for _ in range(events):
            offset += 1
            data = {"match_id": offset % 7, "home_score": 1, "away_score": 0, "minute": 30}
            envelope = {
                "event_type": "match_score_changed",
                "data": data,
                "timestamp": "2026-12-03T00:00:00Z",
                "stream": "matches",
                "offset": offset,
            }
            evs.append(
                PublishedEvent(
                    SubscriptionType.MATCHES,
                    offset,
                    EventType.MATCH_SCORE_CHANGED,
                    data,
                    dumps(envelope),
                    published_at=fake_now[0],
                )
            )
        delivered = 0
        t0 = time.process_time()
        for ev in evs:
            delivered += hub.deliver(ev)
        if timers:
            fake_now[0] += 31
            while timers:
                _, fire = timers.pop(0)
                fire()
            delivered = events * n
        cpu = time.process_time() - t0
        results.append(cpu / delivered * 1e6)
    return results


async def exactness(delay: float, count: int) -> list[float]:
    from football_realtime.brokers.base import PublishedEvent
    from football_realtime.core.events import EventType, SubscriptionType
    from football_realtime.core.permissions import TierPolicy
    from football_realtime.service.connection import Encoded
    from football_realtime.service.timed_views import TimedViews

    policy = TierPolicy.from_config({"free": {"delay_seconds": {"matches": delay}}}, "free")
    timing = TimedViews(policy)
    late: list[float] = []
    done = asyncio.get_running_loop().create_future()

    def release(ev: PublishedEvent, view: object, enc: Encoded) -> None:
        late.append(time.time() - (ev.published_at + delay))
        if len(late) == count and not done.done():
            done.set_result(None)

    for offset in range(1, count + 1):
        ev = PublishedEvent(
            SubscriptionType.MATCHES,
            offset,
            EventType.MATCH_SCORE_CHANGED,
            {"match_id": 1},
            b"{}",
            published_at=time.time(),
        )
        timing.hold(ev, "free", Encoded(ev.payload), release)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(done, delay + 30)
    timing.close()
    return late


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="subscribers (default 10000)")
    p.add_argument("--events", type=int, default=300, help="events per repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.5, help="delay for the exactness run")
    p.add_argument("--compare-src", help="another checkout's src: its `no rule` figure too")
    p.add_argument("--json-one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.json_one:
        print(json.dumps(fanout(a.json_one, a.n, a.events, a.reps)))
        return
    targets: list[tuple[str, str | None, str]] = [(s, None, s) for s in SCENARIOS]
    if a.compare_src:
        targets.insert(1, ("no rule (compare-src)", a.compare_src, "no rule"))
    figures: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    # Interleaved, a fresh process each (this machine is noisy: a slow spell hits every
    # target alike instead of one).
    for _ in range(a.reps):
        for name, src, scenario in targets:
            figures[name] += run_in(src, scenario, a)
    rows = list(figures.items())
    print(f"N={a.n} subscribers, {a.events} events per repetition, {a.reps} repetitions")
    print("| scenario | CPU µs per delivery (median) | per repetition |")
    print("|---|---|---|")
    for name, figs in rows:
        each = " / ".join(f"{x:.3f}" for x in figs)
        print(f"| {name} | {statistics.median(figs):.3f} | {each} |")
    late = asyncio.run(exactness(a.delay, 100))
    late.sort()
    ms = [x * 1000 for x in late]
    print(
        f"exactness (delay {a.delay} s, 100 events 10 ms apart, one line): lateness ms "
        f"median {statistics.median(ms):.2f}, p99 {ms[98]:.2f}, max {ms[-1]:.2f}, "
        f"min {ms[0]:.2f}"
    )


def run_in(src: str | None, scenario: str, a: argparse.Namespace) -> list[float]:
    """One scenario in a fresh process (``src``: that checkout's code instead)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.path.abspath(src)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--json-one",
        scenario,
        "--n",
        str(a.n),
        "--events",
        str(a.events),
        "--reps",
        "1",
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    figures: list[float] = json.loads(out.strip().splitlines()[-1])
    return figures


if __name__ == "__main__":
    main()
