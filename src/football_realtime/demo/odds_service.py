"""The simulated odds service (赔率服务): a bookmaker's odds per match, moving with the play."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .live_match import Event, LiveMatch, make_event
from .model import (
    BookOdds,
    Probabilities,
    bookmaker_odds,
    in_play_probabilities,
)

ODDS_SOURCE = "odds-service"
BOOKMAKER = "Macau Line"


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
