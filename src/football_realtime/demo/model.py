"""The goals model behind predictions and odds: independent Poisson goals per team.

Each team's goals over a whole match (stoppage time included) are Poisson with a rate
from the league's average, the two teams' attack and defence, and home advantage. In
play, the goals still to come are Poisson with the rate scaled by the share of the
match left, added to the current score. Pure functions: no clock, no randomness
except through an ``random.Random`` the caller passes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from .fixtures import League, Team

Outcome = Literal["home_win", "draw", "away_win"]
OUTCOMES: tuple[Outcome, ...] = ("home_win", "draw", "away_win")

HOME_ADVANTAGE = 1.12
#: Expected added time per half; the model does not know the referee's board in advance.
EXPECTED_ADDED_FIRST = 2.0
EXPECTED_ADDED_SECOND = 4.0
MATCH_MINUTES = 90.0 + EXPECTED_ADDED_FIRST + EXPECTED_ADDED_SECOND
#: Goals per team beyond which the Poisson tail is negligible (< 1e-9 for rates <= 4).
MAX_GOALS = 16
MIN_ODDS = 1.01
MAX_ODDS = 1000.0


@dataclass(frozen=True, slots=True)
class _HomeDrawAway:
    """Three values, one per outcome."""

    home: float
    draw: float
    away: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.home, self.draw, self.away)

    def of(self, outcome: Outcome) -> float:
        return self.as_tuple()[OUTCOMES.index(outcome)]


@dataclass(frozen=True, slots=True)
class Probabilities(_HomeDrawAway):
    """Home win / draw / away win; always sums to 1."""

    @property
    def favourite(self) -> Outcome:
        values = self.as_tuple()
        return OUTCOMES[values.index(max(values))]

    @property
    def confidence(self) -> float:
        """The probability of the favourite: how sure the model is of its pick."""
        return max(self.as_tuple())

    def max_change(self, other: Probabilities) -> float:
        return max(abs(a - b) for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True)
class BookOdds(_HomeDrawAway):
    """Decimal bookmaker odds for home / draw / away."""

    @property
    def overround(self) -> float:
        """Sum of implied probabilities minus 1: the bookmaker's margin."""
        return sum(1.0 / o for o in self.as_tuple()) - 1.0

    def implied(self) -> Probabilities:
        """Implied probabilities with the margin taken out proportionally."""
        inv = [1.0 / o for o in self.as_tuple()]
        total = sum(inv)
        return Probabilities(inv[0] / total, inv[1] / total, inv[2] / total)


def expected_goals(home: Team, away: Team, league: League) -> tuple[float, float]:
    """Full-match goal rates (home, away) for a fixture."""
    base = league.goals_per_team
    return (
        base * home.attack * away.defence * HOME_ADVANTAGE,
        base * away.attack * home.defence / HOME_ADVANTAGE,
    )


def minutes_left(minute: int, status: str) -> float:
    """Expected minutes still to play, including expected added time."""
    if status == "scheduled":
        return MATCH_MINUTES
    if status == "first_half":
        return max(45.0 + EXPECTED_ADDED_FIRST - minute, 0.5) + 45.0 + EXPECTED_ADDED_SECOND
    if status == "half_time":
        return 45.0 + EXPECTED_ADDED_SECOND
    if status == "second_half":
        return max(90.0 + EXPECTED_ADDED_SECOND - minute, 0.5)
    return 0.0


def poisson_pmf(rate: float, n_max: int = MAX_GOALS) -> list[float]:
    """P(N = k) for k = 0..n_max of a Poisson(rate)."""
    if rate <= 0.0:
        return [1.0] + [0.0] * n_max
    p = math.exp(-rate)
    out = [p]
    for k in range(1, n_max + 1):
        p = p * rate / k
        out.append(p)
    return out


def outcome_probabilities(
    home_rate: float,
    away_rate: float,
    home_score: int = 0,
    away_score: int = 0,
    fraction_left: float = 1.0,
) -> Probabilities:
    """Final-result probabilities from the current score and the share of the match left.

    ``home_rate``/``away_rate`` are full-match rates; ``fraction_left`` in [0, 1].
    """
    f = min(max(fraction_left, 0.0), 1.0)
    ph = poisson_pmf(home_rate * f)
    pa = poisson_pmf(away_rate * f)
    lead = home_score - away_score
    home = draw = away = 0.0
    for i, pi in enumerate(ph):
        if pi == 0.0:
            continue
        for j, pj in enumerate(pa):
            d = lead + i - j
            p = pi * pj
            if d > 0:
                home += p
            elif d == 0:
                draw += p
            else:
                away += p
    total = home + draw + away
    return Probabilities(home / total, draw / total, away / total)


def in_play_probabilities(
    home_rate: float, away_rate: float, home_score: int, away_score: int, minute: int, status: str
) -> Probabilities:
    return outcome_probabilities(
        home_rate,
        away_rate,
        home_score,
        away_score,
        minutes_left(minute, status) / MATCH_MINUTES,
    )


def bookmaker_odds(
    probs: Probabilities,
    margin: float,
    rng: random.Random | None = None,
    noise: float = 0.0,
) -> BookOdds:
    """Decimal odds from probabilities: a multiplicative log-normal ``noise`` on each
    probability (the bookmaker's own view), renormalised, then the ``margin`` applied
    proportionally, rounded to 2 decimals and kept within [1.01, 1000]."""
    q = list(probs.as_tuple())
    if rng is not None and noise > 0.0:
        q = [p * math.exp(rng.gauss(0.0, noise)) for p in q]
    total = sum(q)
    odds = [
        min(MAX_ODDS, max(MIN_ODDS, round(1.0 / max(p / total * (1.0 + margin), 1e-9), 2)))
        for p in q
    ]
    return BookOdds(odds[0], odds[1], odds[2])


def expected_value(probs: Probabilities, odds: BookOdds, outcome: Outcome) -> float:
    """Expected profit of a unit stake on ``outcome`` at ``odds`` if ``probs`` are right."""
    return probs.of(outcome) * odds.of(outcome) - 1.0


def result_of(home_score: int, away_score: int) -> Outcome:
    if home_score > away_score:
        return "home_win"
    if home_score < away_score:
        return "away_win"
    return "draw"


def brier_score(probs: Probabilities, actual: Outcome) -> float:
    """Multi-class Brier score in [0, 2]: 0 is a certain, correct forecast."""
    return sum(
        (p - (1.0 if o == actual else 0.0)) ** 2
        for p, o in zip(probs.as_tuple(), OUTCOMES, strict=True)
    )
