"""The simulated services: lifecycles, events that validate, reproducible seeded runs."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import pytest

from football_realtime.core.events import (
    PAYLOAD_MODELS,
    EventType,
    prepare_published_event,
)
from football_realtime.demo.clock import FakeClock
from football_realtime.demo.model import (
    BookOdds,
    Probabilities,
    brier_score,
    in_play_probabilities,
)
from football_realtime.demo.publishers import PublishError
from football_realtime.demo.runner import Runner
from football_realtime.demo.simulation import SimConfig, Simulation

Event = dict[str, Any]


def run(seed: int, steps: int, config: SimConfig | None = None) -> tuple[Simulation, list[Event]]:
    config = config or SimConfig()
    clock = FakeClock()
    sim = Simulation(config, random.Random(seed), clock.wall)
    events = sim.start()
    for _ in range(steps):
        clock.advance(config.seconds_per_minute)
        events += sim.step()
    return sim, events


@pytest.fixture(scope="module")
def long_run() -> tuple[Simulation, list[Event]]:
    return run(seed=42, steps=700)


def test_seeded_runs_are_reproducible() -> None:
    _, a = run(seed=9, steps=300)
    _, b = run(seed=9, steps=300)
    _, c = run(seed=10, steps=300)
    assert a == b
    assert a != c


def test_every_event_validates_and_names_its_league(
    long_run: tuple[Simulation, list[Event]],
) -> None:
    _, events = long_run
    seen = set()
    for ev in events:
        prepare_published_event(ev)  # raises on anything the service would refuse
        et = EventType(ev["event_type"])
        seen.add(et)
        if "league" in PAYLOAD_MODELS[et].model_fields:
            assert ev["data"].get("league"), ev
    # All the business services' event types, not the server's own or data_refresh.
    assert seen == set(EventType) - {
        EventType.CONNECTION_STATUS,
        EventType.USER_SUBSCRIPTION_CHANGED,
        EventType.DATA_REFRESH,
        EventType.SYSTEM_ALERT,  # only when something goes wrong: see the lag test
    }


def test_whole_lifecycles_in_order(long_run: tuple[Simulation, list[Event]]) -> None:
    _, events = long_run
    by_match: dict[int, list[Event]] = defaultdict(list)
    for ev in events:
        mid = ev["data"].get("match_id")
        if mid is not None:
            by_match[mid].append(ev)
    finished = [
        mid for mid, evs in by_match.items() if evs[-1]["event_type"] == "prediction_completed"
    ]
    assert len(finished) >= 20
    for mid in finished:
        evs = by_match[mid]
        kinds = [e["event_type"] for e in evs]
        statuses = [e["data"]["status"] for e in evs if e["event_type"] == "match_status_changed"]
        assert statuses == ["scheduled", "first_half", "half_time", "second_half", "finished"]
        assert kinds.index("prediction_created") < kinds.index("match_started")
        assert kinds.count("match_started") == kinds.count("match_ended") == 1
        assert kinds[-2:] == ["match_ended", "prediction_completed"]
        goals = [e["data"] for e in evs if e["event_type"] == "match_score_changed"]
        h = a = 0
        for g in goals:
            h += g["scoring_team"] == "home"
            a += g["scoring_team"] == "away"
            assert (g["home_score"], g["away_score"]) == (h, a)
            assert g["scoring_player"] and 1 <= g["minute"] <= 90
        end = next(e["data"] for e in evs if e["event_type"] == "match_ended")
        done = evs[-1]["data"]
        assert (end["home_score"], end["away_score"]) == (h, a)
        assert done["actual_result"] == end["result"]
        assert done["is_correct"] == (done["prediction"] == done["actual_result"])


def test_a_goal_is_followed_by_a_prediction_update_that_moves_the_right_way() -> None:
    config = SimConfig()
    clock = FakeClock()
    sim = Simulation(config, random.Random(42), clock.wall)
    events = sim.start()
    rates: dict[int, tuple[float, float]] = {}
    for _ in range(500):
        clock.advance(config.seconds_per_minute)
        events += sim.step()
        rates.update({mid: m.model_rates for mid, m in sim.matches.items()})
    status: dict[int, str] = {}
    checked = 0
    for i, ev in enumerate(events):
        d = ev["data"]
        if ev["event_type"] == "match_status_changed":
            status[d["match_id"]] = d["status"]
        if ev["event_type"] != "match_score_changed" or status[d["match_id"]] == "finished":
            continue
        later = [e for e in events[i + 1 :] if e["data"].get("match_id") == d["match_id"]]
        if later[0]["event_type"] == "match_score_changed":
            continue  # both teams scored in that minute
        upd = next((e["data"] for e in later if e["event_type"] == "prediction_updated"), None)
        if upd is None or upd["minute"] != d["minute"]:
            continue  # the final whistle came first
        assert upd["reason"] == "goal"
        home = d["scoring_team"] == "home"
        # the same minute without that goal
        before = in_play_probabilities(
            *rates[d["match_id"]],
            d["home_score"] - home,
            d["away_score"] - (not home),
            d["minute"] + d["added_minute"],
            status[d["match_id"]],
        )
        after_p = upd["home_win_prob"] if home else upd["away_win_prob"]
        before_p = before.home if home else before.away
        assert after_p >= round(before_p, 4)
        if 0.001 < before_p < 0.999:  # else both round to the same 4 decimals
            assert after_p > before_p
            checked += 1
    assert checked >= 30


def test_odds_carry_the_margin_and_expected_value_uses_them(
    long_run: tuple[Simulation, list[Event]],
) -> None:
    sim, events = long_run
    current: dict[int, BookOdds] = {}
    for ev in events:
        d = ev["data"]
        if ev["event_type"] == "odds_updated":
            odds = BookOdds(d["home_odds"], d["draw_odds"], d["away_odds"])
            current[d["match_id"]] = odds
            if max(odds.as_tuple()) < 30 and min(odds.as_tuple()) > 1.05:
                assert abs(odds.overround - sim.config.margin) < 0.012, d
        elif ev["event_type"] in ("prediction_created", "prediction_updated"):
            odds = current[d["match_id"]]
            probs = Probabilities(d["home_win_prob"], d["draw_prob"], d["away_win_prob"])
            expected = probs.of(d["prediction"]) * odds.of(d["prediction"]) - 1
            assert d["expected_value"] == pytest.approx(expected, abs=1e-3)
            assert d["confidence"] == max(probs.as_tuple())
        elif ev["event_type"] == "odds_significant_change":
            assert abs(d["change_pct"]) >= sim.config.odds_alert_pct
            assert d["change_pct"] == pytest.approx(
                (d["new_odds"] - d["old_odds"]) / d["old_odds"] * 100, abs=0.06
            )


def test_matches_keep_kicking_off(long_run: tuple[Simulation, list[Event]]) -> None:
    sim, events = long_run
    assert sim.active() == sim.config.matches
    starts = [i for i, e in enumerate(events) if e["event_type"] == "match_started"]
    # kick-offs all through the run, not only at the beginning
    assert starts[-1] > len(events) * 0.9
    live = sim.components()["simulator"]["live_matches"]
    assert 1 <= live <= sim.config.matches


def test_analytics_report_running_accuracy(long_run: tuple[Simulation, list[Event]]) -> None:
    _, events = long_run
    completed = [e["data"] for e in events if e["event_type"] == "prediction_completed"]
    last = [e["data"] for e in events if e["event_type"] == "analytics_updated"][-1]
    assert last["total_predictions"] == len(completed)
    hits = sum(c["is_correct"] for c in completed)
    assert last["hit_rate"] == pytest.approx(hits / len(completed), abs=1e-4)
    briers = [
        brier_score(
            Probabilities(c["home_win_prob"], c["draw_prob"], c["away_win_prob"]),
            c["actual_result"],
        )
        for c in completed
    ]
    assert last["brier_score"] == pytest.approx(sum(briers) / len(briers), abs=1e-3)
    # A model that knows the teams beats always-guess-uniform (Brier 2/3).
    assert last["brier_score"] < 0.667


def test_falling_behind_raises_an_alert_and_catching_up_clears_it() -> None:
    config = SimConfig()
    clock = FakeClock()
    sim = Simulation(config, random.Random(1), clock.wall)
    sim.start()
    assert not [e for e in sim.step(0.0) if e["event_type"] == "system_alert"]
    alerts = [e for e in sim.step(sim.lag_threshold + 1) if e["event_type"] == "system_alert"]
    assert [a["data"]["alert_type"] for a in alerts] == ["warning"]
    assert sim.system.status(sim.components())["data"]["status"] == "degraded"
    assert not [e for e in sim.step(sim.lag_threshold + 1) if e["event_type"] == "system_alert"]
    alerts = [e for e in sim.step(0.0) if e["event_type"] == "system_alert"]
    assert [a["data"]["alert_type"] for a in alerts] == ["info"]
    for a in alerts:
        prepare_published_event(a)


class FlakyPublisher:
    def __init__(self, fail_from: int, fail_until: int) -> None:
        self.calls = 0
        self.fail_from, self.fail_until = fail_from, fail_until
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.calls += 1
        if self.fail_from <= self.calls < self.fail_until:
            raise PublishError("service unreachable")
        prepare_published_event(event)
        self.events.append(event)

    async def close(self) -> None:
        return None


async def test_runner_runs_on_a_fake_clock_and_reports_lost_events() -> None:
    config = SimConfig(speed=30)
    clock = FakeClock()
    publisher = FlakyPublisher(fail_from=50, fail_until=80)
    runner = Runner(Simulation(config, random.Random(3), clock.wall), publisher, clock)
    await asyncio.wait_for(runner.run(max_ticks=200), 10)
    assert runner.ticks == 200
    assert clock.monotonic() == pytest.approx(200 * config.seconds_per_minute)
    assert runner.lost == 30
    alerts = [e["data"] for e in publisher.events if e["event_type"] == "system_alert"]
    assert [a["details"]["lost_events"] for a in alerts] == [30]
    assert alerts[0]["component"] == "publisher"


def test_snapshot_hides_premium_fields_from_free_viewers(
    long_run: tuple[Simulation, list[Event]],
) -> None:
    sim, events = long_run
    premium = sim.snapshot(premium=True)
    free = sim.snapshot(premium=False)
    assert [m["match_id"] for m in premium["matches"]] == [m["match_id"] for m in free["matches"]]
    assert any("prediction" in m and "odds" in m for m in premium["matches"])
    assert not any({"prediction", "probability_history"} & m.keys() for m in free["matches"])
    # odds for everyone: the free tier gets them thinned, not withheld
    assert any("odds" in m for m in free["matches"])
    assert free["analytics"] is None and premium["analytics"]["total_predictions"] > 0
    finished = [m for m in premium["matches"] if m["status"] == "finished"]
    assert finished, "the seeded run ends with a finished match still on show"
    settled = {
        e["data"]["match_id"]: e["data"]
        for e in events
        if e["event_type"] == "prediction_completed"
    }
    for m in finished:
        assert m["result"] == settled[m["match_id"]]["actual_result"]
        assert m["prediction_correct"] == settled[m["match_id"]]["is_correct"]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="matches"):
        SimConfig(matches=0)
    with pytest.raises(ValueError, match="speed"):
        SimConfig(speed=0)


class SwallowingPublisher:
    """Like redis-py at times: a cancellation surfaces as a connection error."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()

    async def publish(self, event: Event) -> None:
        self.calls += 1
        self.entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise PublishError("connection closed") from None

    async def close(self) -> None:
        return None


async def test_runner_stops_when_cancelled_even_if_the_publisher_swallows_it() -> None:
    clock = FakeClock()
    publisher = SwallowingPublisher()
    runner = Runner(Simulation(SimConfig(), random.Random(1), clock.wall), publisher, clock)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(publisher.entered.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert publisher.calls == 1


async def test_runner_stop_returns_after_the_current_event() -> None:
    clock = FakeClock()
    publisher = FlakyPublisher(fail_from=0, fail_until=0)
    runner = Runner(Simulation(SimConfig(), random.Random(1), clock.wall), publisher, clock)
    runner.stop()
    await asyncio.wait_for(runner.run(), 2)
    assert runner.ticks == 0 and publisher.calls == 0
