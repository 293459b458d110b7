"""The simulated business services of the design document's 业务逻辑层: data, prediction,
odds and notification/system. Each turns what happens in a match into the events a real
service would publish; none of them publishes itself (the runner does, through the
service's public publish API), so they are plain synchronous code that tests drive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .fixtures import League, Player, Team
from .model import (
    BookOdds,
    Outcome,
    Probabilities,
    bookmaker_odds,
    brier_score,
    expected_value,
    in_play_probabilities,
    result_of,
)

Event = dict[str, Any]

DATA_SOURCE = "data-service"
PREDICTION_SOURCE = "prediction-service"
ODDS_SOURCE = "odds-service"
SYSTEM_SOURCE = "notification-service"
BOOKMAKER = "Macau Line"


def make_event(event_type: str, data: dict[str, Any], source: str, timestamp: str) -> Event:
    return {"event_type": event_type, "data": data, "source": source, "timestamp": timestamp}


@dataclass
class LiveMatch:
    """One fixture from announcement to the final whistle (the data service's record)."""

    match_id: int
    league: League
    home: Team
    away: Team
    squads: tuple[tuple[Player, ...], tuple[Player, ...]]
    announced_at: int  #: simulation minute
    kickoff_at: int  #: simulation minute
    added_first: int
    added_second: int
    true_rates: tuple[float, float]  #: goal rates the pitch actually plays to (form included)
    model_rates: tuple[float, float]  #: what the prediction service believes
    status: str = "scheduled"
    minute: int = 0
    added: int = 0  #: minutes into added time of the current half (45+2 -> minute 45, added 2)
    home_score: int = 0
    away_score: int = 0
    start_time: str | None = None
    half_time_ends_at: int | None = None
    finished_at: int | None = None
    goals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> Outcome:
        return result_of(self.home_score, self.away_score)

    def ident(self) -> dict[str, Any]:
        return {"match_id": self.match_id, "league": self.league.name}

    def teams(self) -> dict[str, Any]:
        return {
            "home_team": self.home.name,
            "away_team": self.away.name,
            "home_team_en": self.home.name_en,
            "away_team_en": self.away.name_en,
        }

    def clock(self) -> dict[str, Any]:
        return {"minute": self.minute, "added_minute": self.added}

    def score(self) -> dict[str, Any]:
        return {"home_score": self.home_score, "away_score": self.away_score}


class DataService:
    """Fixtures and match lifecycle: match_status_changed, match_started,
    match_score_changed, match_ended."""

    def __init__(self, now: Callable[[], str]) -> None:
        self.now = now

    def _ev(self, event_type: str, data: dict[str, Any]) -> Event:
        return make_event(event_type, data, DATA_SOURCE, self.now())

    def announced(self, m: LiveMatch, kickoff_iso: str) -> list[Event]:
        # A fixture's first appearance: scheduled, with the teams (extra fields pass through).
        return [
            self._ev(
                "match_status_changed",
                {
                    **m.ident(),
                    "status": "scheduled",
                    **m.teams(),
                    "venue": m.home.venue,
                    "venue_en": m.home.venue_en,
                    "start_time": kickoff_iso,
                    "league_en": m.league.name_en,
                },
            )
        ]

    def kicked_off(self, m: LiveMatch) -> list[Event]:
        return [
            self._ev(
                "match_started",
                {
                    **m.ident(),
                    **m.teams(),
                    "start_time": m.start_time,
                    "venue": m.home.venue,
                    "venue_en": m.home.venue_en,
                    "league_en": m.league.name_en,
                },
            ),
            self.status_changed(m, "scheduled"),
        ]

    def status_changed(self, m: LiveMatch, previous: str) -> Event:
        return self._ev(
            "match_status_changed",
            {
                **m.ident(),
                "status": m.status,
                "previous_status": previous,
                **m.clock(),
                **m.score(),
            },
        )

    def goal(self, m: LiveMatch, side: str, player: Player) -> Event:
        return self._ev(
            "match_score_changed",
            {
                **m.ident(),
                **m.score(),
                "scoring_team": side,
                "scoring_player": player.name,
                "scoring_player_en": player.name_en,
                **m.clock(),
                "timestamp": self.now(),
            },
        )

    def ended(self, m: LiveMatch) -> list[Event]:
        return [
            self.status_changed(m, "second_half"),
            self._ev(
                "match_ended",
                {
                    **m.ident(),
                    "home_team": m.home.name,
                    "away_team": m.away.name,
                    **m.score(),
                    "result": m.result,
                },
            ),
        ]


@dataclass
class OddsState:
    odds: BookOdds
    history: list[tuple[str, float, float, float]]
    bias: tuple[float, float]


class OddsService:
    """Bookmaker odds from its own view of the match (the model's rates times a per-match
    bias), plus margin and per-update noise: odds_updated, odds_significant_change."""

    def __init__(
        self,
        now: Callable[[], str],
        rng: random.Random,
        margin: float,
        noise: float,
        alert_pct: float,
        max_history: int = 200,
    ) -> None:
        self.now = now
        self.rng = rng
        self.margin = margin
        self.noise = noise
        self.alert_pct = alert_pct
        self.max_history = max_history
        self.books: dict[int, OddsState] = {}

    def current(self, match_id: int) -> BookOdds | None:
        st = self.books.get(match_id)
        return st.odds if st is not None else None

    def _view(self, m: LiveMatch, bias: tuple[float, float]) -> Probabilities:
        hr, ar = m.model_rates
        return in_play_probabilities(
            hr * bias[0], ar * bias[1], m.home_score, m.away_score, m.minute + m.added, m.status
        )

    def update(self, m: LiveMatch) -> list[Event]:
        st = self.books.get(m.match_id)
        if st is None:
            bias = (math.exp(self.rng.gauss(0, 0.08)), math.exp(self.rng.gauss(0, 0.08)))
        else:
            bias = st.bias
        odds = bookmaker_odds(self._view(m, bias), self.margin, self.rng, self.noise)
        events: list[Event] = []
        data: dict[str, Any] = {
            **m.ident(),
            "bookmaker": BOOKMAKER,
            "home_odds": odds.home,
            "draw_odds": odds.draw,
            "away_odds": odds.away,
            **m.clock(),
            "status": m.status,
        }
        if st is not None:
            old = st.odds
            data["change"] = {
                "home": round(odds.home - old.home, 2),
                "draw": round(odds.draw - old.draw, 2),
                "away": round(odds.away - old.away, 2),
            }
        events.append(make_event("odds_updated", data, ODDS_SOURCE, self.now()))
        if st is not None:
            events.extend(self._significant(m, st.odds, odds))
            st.odds = odds
        else:
            st = OddsState(odds, [], bias)
            self.books[m.match_id] = st
        st.history.append((self.now(), odds.home, odds.draw, odds.away))
        del st.history[: -self.max_history]
        return events

    def _significant(self, m: LiveMatch, old: BookOdds, new: BookOdds) -> list[Event]:
        # Only the outcome that moved most, and only within a market people still bet on:
        # 300.0 -> 400.0 is +33% but says nothing.
        best: tuple[float, str, float, float] | None = None
        for side, o, n in zip(
            ("home", "draw", "away"), old.as_tuple(), new.as_tuple(), strict=True
        ):
            if min(o, n) > 15.0:
                continue
            pct = (n - o) / o * 100.0
            if abs(pct) >= self.alert_pct and (best is None or abs(pct) > abs(best[0])):
                best = (pct, side, o, n)
        if best is None:
            return []
        pct, side, o, n = best
        return [
            make_event(
                "odds_significant_change",
                {
                    **m.ident(),
                    "bookmaker": BOOKMAKER,
                    "outcome": side,
                    "old_odds": o,
                    "new_odds": n,
                    "change_pct": round(pct, 1),
                    "threshold_pct": self.alert_pct,
                    **m.clock(),
                },
                ODDS_SOURCE,
                self.now(),
            )
        ]

    def close(self, match_id: int) -> None:
        self.books.pop(match_id, None)


@dataclass
class PredictionState:
    prediction_id: str
    pre_match: Probabilities
    published: Probabilities
    current: Probabilities
    history: list[tuple[str, float, float, float]]


class PredictionService:
    """Pre-match and in-play predictions from the Poisson model: prediction_created,
    prediction_updated (on a goal, or when a probability moved by ``delta``),
    prediction_completed with the outcome."""

    def __init__(self, now: Callable[[], str], delta: float, max_history: int = 200) -> None:
        self.now = now
        self.delta = delta
        self.max_history = max_history
        self.predictions: dict[int, PredictionState] = {}
        #: settled predictions of finished matches still on show (the simulation drops them)
        self.settled: dict[int, PredictionState] = {}

    def probabilities(self, m: LiveMatch) -> Probabilities:
        hr, ar = m.model_rates
        return in_play_probabilities(
            hr, ar, m.home_score, m.away_score, m.minute + m.added, m.status
        )

    def _body(self, m: LiveMatch, st: PredictionState, odds: BookOdds | None) -> dict[str, Any]:
        p = st.current
        pick = p.favourite
        body: dict[str, Any] = {
            "prediction_id": st.prediction_id,
            **m.ident(),
            **m.teams(),
            "prediction": pick,
            "confidence": round(p.confidence, 4),
            "home_win_prob": round(p.home, 4),
            "draw_prob": round(p.draw, 4),
            "away_win_prob": round(p.away, 4),
            "strategy": "poisson_pre_match" if m.status == "scheduled" else "poisson_in_play",
        }
        if odds is not None:
            body["expected_value"] = round(expected_value(p, odds, pick), 4)
            body["odds"] = odds.of(pick)
        return body

    def created(self, m: LiveMatch, odds: BookOdds | None, sim_minute: int) -> list[Event]:
        p = self.probabilities(m)
        st = PredictionState(f"pred-{m.match_id}", p, p, p, [(self.now(), p.home, p.draw, p.away)])
        self.predictions[m.match_id] = st
        body = self._body(m, st, odds)
        body["kickoff_in_minutes"] = m.kickoff_at - sim_minute
        return [make_event("prediction_created", body, PREDICTION_SOURCE, self.now())]

    def updated(self, m: LiveMatch, odds: BookOdds | None, reason: str | None) -> list[Event]:
        """Recompute; publish when ``reason`` is given (a goal, a new half) or the move is
        large enough to matter."""
        st = self.predictions.get(m.match_id)
        if st is None:
            return []
        p = self.probabilities(m)
        st.current = p
        moved = p.max_change(st.published)
        if reason is None and moved < self.delta:
            return []
        # The chart shows what subscribers saw: only published points.
        st.history.append((self.now(), p.home, p.draw, p.away))
        del st.history[: -self.max_history]
        previous = st.published.favourite
        st.published = p
        body = self._body(m, st, odds)
        body.update(
            {
                **m.clock(),
                **m.score(),
                "reason": reason or "time_decay",
                "previous_prediction": previous,
            }
        )
        return [make_event("prediction_updated", body, PREDICTION_SOURCE, self.now())]

    def completed(self, m: LiveMatch) -> tuple[list[Event], PredictionState | None]:
        st = self.predictions.pop(m.match_id, None)
        if st is None:
            return [], None
        self.settled[m.match_id] = st
        pre = st.pre_match
        actual = m.result
        pick = pre.favourite
        body = {
            "prediction_id": st.prediction_id,
            **m.ident(),
            **m.teams(),
            "prediction": pick,
            "actual_result": actual,
            "is_correct": pick == actual,
            **m.score(),
            "confidence": round(pre.confidence, 4),
            "home_win_prob": round(pre.home, 4),
            "draw_prob": round(pre.draw, 4),
            "away_win_prob": round(pre.away, 4),
            "brier_score": round(brier_score(pre, actual), 4),
            "strategy": "poisson_pre_match",
        }
        return [make_event("prediction_completed", body, PREDICTION_SOURCE, self.now())], st


@dataclass
class Accuracy:
    """Running accuracy of completed (pre-match) predictions."""

    total: int = 0
    hits: int = 0
    brier_sum: float = 0.0
    log_loss_sum: float = 0.0
    by_league: dict[str, list[int]] = field(default_factory=dict)

    def add(self, league: str, pre: Probabilities, actual: Outcome) -> None:
        self.total += 1
        hit = pre.favourite == actual
        self.hits += hit
        self.brier_sum += brier_score(pre, actual)
        self.log_loss_sum += -math.log(max(pre.of(actual), 1e-12))
        row = self.by_league.setdefault(league, [0, 0])
        row[0] += 1
        row[1] += hit

    @property
    def hit_rate(self) -> float:
        return self.hits / self.total if self.total else 0.0

    @property
    def brier(self) -> float:
        return self.brier_sum / self.total if self.total else 0.0


class SystemService:
    """Notification/system service: system_status, analytics_updated, system_alert."""

    def __init__(self, now: Callable[[], str]) -> None:
        self.now = now
        self.accuracy = Accuracy()
        self.behind = False
        self.lost_events = 0

    def analytics(self) -> Event:
        a = self.accuracy
        metrics = {"log_loss": round(a.log_loss_sum / a.total, 4) if a.total else 0.0}
        for league, (n, hits) in sorted(a.by_league.items()):
            metrics[f"hit_rate.{league}"] = round(hits / n, 4)
        return make_event(
            "analytics_updated",
            {
                "period": "demo_session",
                "total_predictions": a.total,
                "correct_predictions": a.hits,
                "accuracy": round(a.hit_rate, 4),
                "hit_rate": round(a.hit_rate, 4),
                "brier_score": round(a.brier, 4),
                "metrics": metrics,
            },
            SYSTEM_SOURCE,
            self.now(),
        )

    def status(self, components: dict[str, Any]) -> Event:
        degraded = self.behind
        return make_event(
            "system_status",
            {
                "status": "degraded" if degraded else "healthy",
                "message": "simulator running behind schedule"
                if degraded
                else "all demo services running",
                "components": components,
            },
            SYSTEM_SOURCE,
            self.now(),
        )

    def lag(self, lag_seconds: float, threshold: float) -> list[Event]:
        """Alert once when the simulator falls behind, and once when it has caught up."""
        if not self.behind and lag_seconds > threshold:
            self.behind = True
            return [
                self.alert(
                    "warning",
                    "high",
                    "simulator",
                    f"simulator is {lag_seconds:.1f}s behind schedule",
                    {"lag_seconds": round(lag_seconds, 3), "threshold_seconds": threshold},
                )
            ]
        if self.behind and lag_seconds < threshold / 2:
            self.behind = False
            return [
                self.alert(
                    "info",
                    "low",
                    "simulator",
                    "simulator caught up with its schedule",
                    {"lag_seconds": round(lag_seconds, 3)},
                )
            ]
        return []

    def publish_failures(self, lost: int, last_error: str) -> Event:
        return self.alert(
            "error",
            "high",
            "publisher",
            f"{lost} events could not be published to the realtime service",
            {"lost_events": lost, "last_error": last_error[:300]},
        )

    def alert(
        self, alert_type: str, severity: str, component: str, message: str, details: dict[str, Any]
    ) -> Event:
        return make_event(
            "system_alert",
            {
                "alert_type": alert_type,
                "message": message,
                "severity": severity,
                "component": component,
                "details": details,
            },
            SYSTEM_SOURCE,
            self.now(),
        )
