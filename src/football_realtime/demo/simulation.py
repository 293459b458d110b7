"""The simulated football world: fixtures kick off, minutes pass, goals fall, and the
business services (data, odds, prediction, notification) turn that into events.

:meth:`Simulation.step` advances one match minute for every fixture and returns the
events to publish, in order; it never sleeps or publishes, so a seeded run is a pure
function of the seed and the number of steps (see ``runner.py`` for the clock).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .clock import iso
from .data_service import DataService
from .fixtures import LEAGUES, Team, squad, teams_of
from .live_match import Event, LiveMatch
from .model import MATCH_MINUTES, expected_goals, expected_value
from .odds_service import OddsService
from .prediction_service import PredictionService
from .system_service import SystemService

#: Event types a free viewer's feed includes (the demo's free tier, demo/app.py
#: ``demo_tiers``: the design document's, plus goals, late).
FREE_EVENT_TYPES = frozenset({"prediction_created", "match_started", "match_score_changed"})
#: Event types kept for the snapshot's feed of recent predictions and alerts.
FEED_EVENT_TYPES = frozenset(
    {
        "prediction_created",
        "prediction_completed",
        "odds_significant_change",
        "system_alert",
        "match_score_changed",
    }
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the demo world runs. Minutes are match minutes; ``speed`` maps them to real time."""

    matches: int = 6  #: fixtures scheduled or in play at any time
    speed: float = 30.0  #: simulated seconds per real second (30: a 90-minute match in 3 min)
    pre_match_minutes: int = 8  #: between a fixture's announcement (and prediction) and kick-off
    half_time_minutes: int = 8
    odds_interval: int = 3  #: odds refresh every N minutes (and at once after a goal)
    margin: float = 0.06  #: bookmaker overround
    odds_noise: float = 0.02  #: log-normal noise on the bookmaker's probabilities per update
    odds_alert_pct: float = 20.0  #: odds_significant_change threshold, percent
    prediction_delta: float = 0.04  #: prediction_updated when a probability moved this much
    status_interval: int = 10  #: system_status every N minutes
    linger_minutes: int = 15  #: finished matches stay in the snapshot this long
    form_sigma: float = 0.15  #: match-day form the model cannot see (log-normal on goal rates)
    feed_size: int = 40
    first_match_id: int = 1001

    def __post_init__(self) -> None:
        if not 1 <= self.matches <= 200:
            raise ValueError("matches must be between 1 and 200")
        if not 0.1 <= self.speed <= 100_000:
            raise ValueError("speed must be between 0.1 and 100000")

    @property
    def seconds_per_minute(self) -> float:
        """Real seconds one match minute takes."""
        return 60.0 / self.speed


class Simulation:
    def __init__(self, config: SimConfig, rng: random.Random, wall: Callable[[], datetime]) -> None:
        self.config = config
        self.rng = rng
        self.wall = wall
        self.minute = 0
        self.matches: dict[int, LiveMatch] = {}
        self._next_id = config.first_match_id
        self._league_turn = 0
        now = self.now
        self.data = DataService(now)
        self.odds = OddsService(now, rng, config.margin, config.odds_noise, config.odds_alert_pct)
        self.predictions = PredictionService(now, config.prediction_delta)
        self.system = SystemService(now)
        self.feed: deque[Event] = deque(maxlen=config.feed_size)
        self.events_produced = 0
        self.last_lag = 0.0

    def now(self) -> str:
        return iso(self.wall())

    # -- the world ----------------------------------------------------------------

    def start(self) -> list[Event]:
        """Announce the first fixtures, kick-offs staggered so the screen fills quickly
        and the matches do not all reach half-time together."""
        cycle = self.config.pre_match_minutes + int(MATCH_MINUTES) + self.config.half_time_minutes
        stagger = max(1, min(8, cycle // self.config.matches))
        events: list[Event] = []
        for i in range(self.config.matches):
            events += self._announce(kickoff_at=1 + i * stagger)
        events.append(self.system.status(self.components()))
        events.append(self.system.analytics())
        return self._record(events)

    def step(self, lag_seconds: float = 0.0) -> list[Event]:
        """Advance one minute; return the events that minute produced."""
        self.minute += 1
        self.last_lag = lag_seconds
        events: list[Event] = []
        for m in sorted(self.matches.values(), key=lambda x: x.match_id):
            if m.status != "finished":
                events += self._advance(m)
        for mid in [
            mid
            for mid, m in self.matches.items()
            if m.finished_at is not None
            and self.minute - m.finished_at >= self.config.linger_minutes
        ]:
            del self.matches[mid]
            self.predictions.settled.pop(mid, None)
        while self.active() < self.config.matches:
            events += self._announce(kickoff_at=self.minute + self.config.pre_match_minutes)
        events += self.system.lag(lag_seconds, self.lag_threshold)
        if self.minute % self.config.status_interval == 0:
            events.append(self.system.status(self.components()))
        return self._record(events)

    @property
    def lag_threshold(self) -> float:
        """Seconds behind schedule that count as falling behind."""
        return max(2.0, 5 * self.config.seconds_per_minute)

    def active(self) -> int:
        return sum(1 for m in self.matches.values() if m.status != "finished")

    def _record(self, events: list[Event]) -> list[Event]:
        self.events_produced += len(events)
        self.feed.extend(e for e in events if e["event_type"] in FEED_EVENT_TYPES)
        return events

    def _pick_fixture(self) -> tuple[Team, Team]:
        busy = {
            t.name
            for m in self.matches.values()
            if m.status != "finished"
            for t in (m.home, m.away)
        }
        for _ in range(len(LEAGUES)):
            league = LEAGUES[self._league_turn % len(LEAGUES)]
            self._league_turn += 1
            free = [t for t in teams_of(league.name) if t.name not in busy]
            if len(free) >= 2:
                home, away = self.rng.sample(free, 2)
                return home, away
        raise RuntimeError("no free teams left for a new fixture")  # pragma: no cover

    def _announce(self, kickoff_at: int) -> list[Event]:
        home, away = self._pick_fixture()
        league = next(lg for lg in LEAGUES if lg.name == home.league)
        model = expected_goals(home, away, league)
        sigma = self.config.form_sigma
        form = (math.exp(self.rng.gauss(0, sigma)), math.exp(self.rng.gauss(0, sigma)))
        m = LiveMatch(
            match_id=self._next_id,
            league=league,
            home=home,
            away=away,
            squads=(squad(home), squad(away)),
            announced_at=self.minute,
            kickoff_at=kickoff_at,
            added_first=self.rng.choice((1, 1, 2, 2, 3, 4)),
            added_second=self.rng.choice((2, 3, 4, 4, 5, 6)),
            true_rates=(model[0] * form[0], model[1] * form[1]),
            model_rates=model,
        )
        self._next_id += 1
        self.matches[m.match_id] = m
        kickoff = self.wall() + timedelta(
            seconds=(kickoff_at - self.minute) * self.config.seconds_per_minute
        )
        events = self.data.announced(m, iso(kickoff))
        events += self.odds.update(m)
        events += self.predictions.created(m, self.odds.current(m.match_id), self.minute)
        return events

    def _advance(self, m: LiveMatch) -> list[Event]:
        t = self.minute
        if m.status == "scheduled":
            if t < m.kickoff_at:
                if (t - m.announced_at) % self.config.odds_interval == 0:
                    return self.odds.update(m)
                return []
            m.status = "first_half"
            m.start_time = self.now()
            events = self.data.kicked_off(m)
            events += self.odds.update(m)
            events += self.predictions.updated(m, self.odds.current(m.match_id), None)
            return events
        if m.status == "half_time":
            if m.half_time_ends_at is None or t < m.half_time_ends_at:
                return []
            m.status = "second_half"
            m.minute, m.added = 45, 0
            events = [self.data.status_changed(m, "half_time")]
            events += self.odds.update(m)
            return events
        return self._play_minute(m)

    def _play_minute(self, m: LiveMatch) -> list[Event]:
        first = m.status == "first_half"
        end = 45 if first else 90
        added_total = m.added_first if first else m.added_second
        if m.minute < end:
            m.minute += 1
        else:
            m.added += 1
        events: list[Event] = []
        scored = False
        # Two draws every minute whatever happens, so a seeded run stays in step.
        for side, rate in (("home", m.true_rates[0]), ("away", m.true_rates[1])):
            if self.rng.random() < 1.0 - math.exp(-rate / MATCH_MINUTES):
                scored = True
                events.append(self._goal(m, side))
        changed = False
        if m.minute == end and m.added >= added_total:
            changed = True
            if first:
                m.status = "half_time"
                m.half_time_ends_at = self.minute + self.config.half_time_minutes
                m.added = 0
                events.append(self.data.status_changed(m, "first_half"))
            else:
                m.status = "finished"
                m.finished_at = self.minute
                events += self.data.ended(m)
                return events + self._settle(m)
        if scored or changed or (self.minute - m.kickoff_at) % self.config.odds_interval == 0:
            events += self.odds.update(m)
        events += self.predictions.updated(
            m, self.odds.current(m.match_id), "goal" if scored else None
        )
        return events

    def _goal(self, m: LiveMatch, side: str) -> Event:
        players = m.squads[0 if side == "home" else 1]
        player = self.rng.choices(players, weights=(4, 3, 2, 1))[0]
        if side == "home":
            m.home_score += 1
        else:
            m.away_score += 1
        m.goals.append(
            {
                "side": side,
                "minute": m.minute,
                "added_minute": m.added,
                "player": player.name,
                "player_en": player.name_en,
            }
        )
        return self.data.goal(m, side, player)

    def _settle(self, m: LiveMatch) -> list[Event]:
        self.odds.close(m.match_id)
        events, st = self.predictions.completed(m)
        if st is not None:
            self.system.accuracy.add(m.league.name, st.pre_match, m.result)
            events.append(self.system.analytics())
        return events

    # -- observation --------------------------------------------------------------

    def components(self) -> dict[str, Any]:
        live = sum(1 for m in self.matches.values() if m.status not in ("scheduled", "finished"))
        return {
            "data_service": "ok",
            "prediction_service": "ok",
            "odds_service": "ok",
            "simulator": {
                "minute": self.minute,
                "live_matches": live,
                "scheduled_matches": sum(
                    1 for m in self.matches.values() if m.status == "scheduled"
                ),
                "speed": self.config.speed,
                "lag_seconds": round(self.last_lag, 3),
                "events_produced": self.events_produced,
            },
        }

    def snapshot(self, premium: bool) -> dict[str, Any]:
        """The state a dashboard loads before following live events.

        A free viewer gets fixtures, scores and odds; a premium one also probabilities,
        their history, and the full feed."""
        matches = []
        for m in sorted(self.matches.values(), key=lambda x: (x.kickoff_at, x.match_id)):
            row: dict[str, Any] = {
                **m.ident(),
                "league_en": m.league.name_en,
                **m.teams(),
                "venue": m.home.venue,
                "venue_en": m.home.venue_en,
                "status": m.status,
                **m.clock(),
                **m.score(),
                "kickoff_in_minutes": max(m.kickoff_at - self.minute, 0),
                "start_time": m.start_time,
                "goals": list(m.goals),
            }
            if m.status == "finished":
                row["result"] = m.result
            if premium:
                book = self.odds.books.get(m.match_id)
                st = self.predictions.predictions.get(m.match_id)
                settled = st is None
                st = st or self.predictions.settled.get(m.match_id)
                if st is not None:
                    p = st.published
                    row["prediction"] = {
                        "prediction_id": st.prediction_id,
                        "prediction": p.favourite,
                        "confidence": round(p.confidence, 4),
                        "home_win_prob": round(p.home, 4),
                        "draw_prob": round(p.draw, 4),
                        "away_win_prob": round(p.away, 4),
                    }
                    if book is not None:
                        ev = expected_value(p, book.odds, p.favourite)
                        row["prediction"]["expected_value"] = round(ev, 4)
                    if settled:
                        row["prediction_correct"] = st.pre_match.favourite == m.result
                    row["probability_history"] = [list(h) for h in st.history]
            # Odds for every viewer: the free tier gets them thinned (docs/demo.md).
            book = self.odds.books.get(m.match_id)
            if book is not None:
                row["odds"] = {
                    "home": book.odds.home,
                    "draw": book.odds.draw,
                    "away": book.odds.away,
                }
                row["odds_history"] = [list(h) for h in book.history]
            matches.append(row)
        a = self.system.accuracy
        feed = [e for e in self.feed if premium or e["event_type"] in FREE_EVENT_TYPES]
        return {
            "minute": self.minute,
            "server_time": self.now(),
            "speed": self.config.speed,
            "seconds_per_minute": self.config.seconds_per_minute,
            "leagues": [{"name": lg.name, "name_en": lg.name_en} for lg in LEAGUES],
            "matches": matches,
            "analytics": {
                "total_predictions": a.total,
                "hit_rate": round(a.hit_rate, 4),
                "brier_score": round(a.brier, 4),
            }
            if premium
            else None,
            "feed": feed,
            "tier": "premium" if premium else "free",
        }
