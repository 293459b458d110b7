"""The goals model: probabilities, their movement in play, odds and scores."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from football_realtime.demo.fixtures import LEAGUE_BY_NAME, TEAMS, teams_of
from football_realtime.demo.model import (
    MATCH_MINUTES,
    Probabilities,
    bookmaker_odds,
    brier_score,
    expected_goals,
    expected_value,
    in_play_probabilities,
    minutes_left,
    outcome_probabilities,
)

rates = st.floats(min_value=0.05, max_value=4.0)
goals = st.integers(min_value=0, max_value=6)
fractions = st.floats(min_value=0.0, max_value=1.0)


@given(rates, rates, goals, goals, fractions)
def test_probabilities_sum_to_one(hr: float, ar: float, h: int, a: int, f: float) -> None:
    p = outcome_probabilities(hr, ar, h, a, f)
    assert math.isclose(sum(p.as_tuple()), 1.0, abs_tol=1e-12)
    assert all(0.0 <= v <= 1.0 for v in p.as_tuple())


@given(rates, rates, goals, goals, st.floats(min_value=0.01, max_value=1.0))
def test_a_home_goal_raises_home_win_probability(
    hr: float, ar: float, h: int, a: int, f: float
) -> None:
    before = outcome_probabilities(hr, ar, h, a, f)
    after = outcome_probabilities(hr, ar, h + 1, a, f)
    # strictly, unless already certain to float precision
    assert after.home > before.home or before.away < 1e-15 or before.home > 1 - 1e-15
    assert after.away <= before.away


@given(rates, rates, goals, goals, st.floats(min_value=0.01, max_value=1.0))
def test_an_away_goal_raises_away_win_probability(
    hr: float, ar: float, h: int, a: int, f: float
) -> None:
    before = outcome_probabilities(hr, ar, h, a, f)
    after = outcome_probabilities(hr, ar, h, a + 1, f)
    assert after.away > before.away or before.home < 1e-15 or before.away > 1 - 1e-15
    assert after.home <= before.home


@given(rates, rates, st.integers(min_value=1, max_value=3))
def test_a_lead_becomes_surer_as_time_runs_out(r1: float, r2: float, lead: int) -> None:
    # The leader is not the stronger side (a much stronger leader may gain from more time).
    hr, ar = min(r1, r2), max(r1, r2)
    probs = [outcome_probabilities(hr, ar, lead, 0, f).home for f in (1.0, 0.6, 0.3, 0.05)]
    assert probs == sorted(probs)


def test_no_time_left_means_the_score_decides() -> None:
    assert outcome_probabilities(1.5, 1.2, 2, 1, 0.0) == Probabilities(1.0, 0.0, 0.0)
    assert outcome_probabilities(1.5, 1.2, 1, 1, 0.0) == Probabilities(0.0, 1.0, 0.0)
    assert outcome_probabilities(1.5, 1.2, 0, 3, 0.0) == Probabilities(0.0, 0.0, 1.0)


def test_equal_rates_are_symmetric_and_draws_plausible() -> None:
    p = outcome_probabilities(1.3, 1.3)
    assert math.isclose(p.home, p.away, rel_tol=1e-9)
    assert 0.2 < p.draw < 0.32  # real leagues: about a quarter of matches are draws


def test_in_play_uses_minutes_left() -> None:
    assert minutes_left(0, "scheduled") == MATCH_MINUTES
    assert minutes_left(30, "first_half") > minutes_left(30, "second_half") > 0
    assert minutes_left(90, "finished") == 0.0
    early = in_play_probabilities(1.4, 1.1, 1, 0, 10, "first_half")
    late = in_play_probabilities(1.4, 1.1, 1, 0, 85, "second_half")
    assert late.home > early.home


def test_stronger_home_team_is_favourite() -> None:
    league = LEAGUE_BY_NAME["英超"]
    city = next(t for t in TEAMS if t.name == "曼城")
    villa = next(t for t in TEAMS if t.name == "阿斯顿维拉")
    hr, ar = expected_goals(city, villa, league)
    assert hr > ar
    assert outcome_probabilities(hr, ar).favourite == "home_win"


def test_every_league_has_enough_teams_and_sane_rates() -> None:
    for league in LEAGUE_BY_NAME.values():
        teams = teams_of(league.name)
        assert len(teams) >= 6
        for home in teams:
            for away in teams:
                if home is not away:
                    hr, ar = expected_goals(home, away, league)
                    assert 0.4 < hr < 3.5 and 0.3 < ar < 3.0


@given(rates, rates, goals, goals, st.floats(min_value=0.3, max_value=1.0))
def test_odds_without_noise_are_the_model_plus_margin(
    hr: float, ar: float, h: int, a: int, f: float
) -> None:
    p = outcome_probabilities(hr, ar, h, a, f)
    odds = bookmaker_odds(p, 0.06)
    capped = [o in (1.01, 1000.0) for o in odds.as_tuple()]
    for prob, o, cap in zip(p.as_tuple(), odds.as_tuple(), capped, strict=True):
        if not cap:
            # 2-decimal rounding is the only difference from 1 / (p * (1 + margin))
            assert abs(o - 1.0 / (prob * 1.06)) <= 0.005 + 1e-9
    if not any(capped) and max(odds.as_tuple()) < 50:
        assert abs(odds.overround - 0.06) < 0.01
        implied = odds.implied()
        assert all(abs(x - y) < 0.01 for x, y in zip(implied.as_tuple(), p.as_tuple(), strict=True))


def test_odds_with_noise_keep_the_margin_and_stay_near_the_model() -> None:
    rng = random.Random(5)
    p = Probabilities(0.45, 0.28, 0.27)
    for _ in range(200):
        odds = bookmaker_odds(p, 0.06, rng, 0.02)
        assert abs(odds.overround - 0.06) < 0.01
        for x, y in zip(odds.implied().as_tuple(), p.as_tuple(), strict=True):
            assert abs(math.log(x / y)) < 0.15  # within ~7 sigma of the noise


def test_odds_stay_in_the_valid_range() -> None:
    odds = bookmaker_odds(Probabilities(0.999999, 0.000001, 0.0), 0.06)
    assert odds.home == 1.01 and odds.away == 1000.0


def test_expected_value_and_brier() -> None:
    p = Probabilities(0.5, 0.3, 0.2)
    odds = bookmaker_odds(p, 0.0)
    assert expected_value(p, odds, "home_win") == pytest.approx(0.0, abs=0.01)
    assert brier_score(Probabilities(1.0, 0.0, 0.0), "home_win") == 0.0
    assert brier_score(Probabilities(1.0, 0.0, 0.0), "away_win") == 2.0
    assert brier_score(p, "draw") == pytest.approx(0.25 + 0.49 + 0.04)
