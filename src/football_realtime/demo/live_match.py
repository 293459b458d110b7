"""A match as the simulated services see it, and the event shape they produce."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .fixtures import League, Player, Team
from .model import (
    Outcome,
    result_of,
)

Event = dict[str, Any]


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
