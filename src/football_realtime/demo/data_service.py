"""The simulated data service (数据服务): kick-offs, goals, status and the final whistle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .fixtures import Player
from .live_match import Event, LiveMatch, make_event

DATA_SOURCE = "data-service"


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
