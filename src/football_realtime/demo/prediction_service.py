"""The simulated prediction service (预测服务): pre-match and in-play predictions,
settled at full time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .live_match import Event, LiveMatch, make_event
from .model import (
    BookOdds,
    Probabilities,
    brier_score,
    expected_value,
    in_play_probabilities,
)

PREDICTION_SOURCE = "prediction-service"


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
