"""Event model: the 15 event types, the envelope, and one payload model per type.

Payload models validate what publishers send (strictly: ``"456"`` is not a match id)
and let unknown fields through unchanged, because business services evolve faster
than this service. Validation happens once, at publish time.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import LocalError


class EventType(StrEnum):
    CONNECTION_STATUS = "connection_status"
    PREDICTION_CREATED = "prediction_created"
    PREDICTION_UPDATED = "prediction_updated"
    PREDICTION_COMPLETED = "prediction_completed"
    MATCH_STARTED = "match_started"
    MATCH_SCORE_CHANGED = "match_score_changed"
    MATCH_STATUS_CHANGED = "match_status_changed"
    MATCH_ENDED = "match_ended"
    ODDS_UPDATED = "odds_updated"
    ODDS_SIGNIFICANT_CHANGE = "odds_significant_change"
    SYSTEM_ALERT = "system_alert"
    SYSTEM_STATUS = "system_status"
    USER_SUBSCRIPTION_CHANGED = "user_subscription_changed"
    DATA_REFRESH = "data_refresh"
    ANALYTICS_UPDATED = "analytics_updated"


class SubscriptionType(StrEnum):
    PREDICTIONS = "predictions"
    MATCHES = "matches"
    ODDS = "odds"
    SYSTEM_ALERTS = "system_alerts"
    ANALYTICS = "analytics"


#: Which stream (subscription type) each publishable event type belongs to.
STREAM_EVENT_TYPES: dict[SubscriptionType, tuple[EventType, ...]] = {
    SubscriptionType.PREDICTIONS: (
        EventType.PREDICTION_CREATED,
        EventType.PREDICTION_UPDATED,
        EventType.PREDICTION_COMPLETED,
    ),
    SubscriptionType.MATCHES: (
        EventType.MATCH_STARTED,
        EventType.MATCH_SCORE_CHANGED,
        EventType.MATCH_STATUS_CHANGED,
        EventType.MATCH_ENDED,
    ),
    SubscriptionType.ODDS: (EventType.ODDS_UPDATED, EventType.ODDS_SIGNIFICANT_CHANGE),
    SubscriptionType.SYSTEM_ALERTS: (
        EventType.SYSTEM_ALERT,
        EventType.SYSTEM_STATUS,
        EventType.DATA_REFRESH,
    ),
    SubscriptionType.ANALYTICS: (EventType.ANALYTICS_UPDATED,),
}

EVENT_STREAM: dict[EventType, SubscriptionType] = {
    et: st for st, ets in STREAM_EVENT_TYPES.items() for et in ets
}

#: Sent by the server to connections directly; never published into a stream.
CONNECTION_EVENT_TYPES = frozenset(
    {EventType.CONNECTION_STATUS, EventType.USER_SUBSCRIPTION_CHANGED}
)


def utc_now_iso() -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    return utc_iso(time.time())


def utc_iso(ts: float) -> str:
    """``ts`` (seconds since the epoch) as ISO-8601 UTC, milliseconds, ``Z``."""
    second = int(ts)
    return f"{utc_second(second)}.{int((ts - second) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def utc_second(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole second; formatted once per second (several
    messages and log lines are stamped each second, and strftime is most of the cost)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _iso_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time, e.g. 2025-10-29T20:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (use a trailing Z for UTC)")
    return value


#: Documented as ``format: date-time`` (RFC 3339); accepted: any ISO-8601 date-time with a zone.
IsoTimestamp = Annotated[
    str, AfterValidator(_iso_timestamp), Field(json_schema_extra={"format": "date-time"})
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Odds = Annotated[float, Field(gt=1.0, le=10_000.0)]
MatchId = Annotated[int, Field(ge=0)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
Outcome = Literal["home_win", "draw", "away_win"]
Side = Literal["home", "away"]


class Payload(BaseModel):
    """Base of every payload model: strict types, finite numbers, unknown fields kept."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class _PredictionBase(Payload):
    prediction_id: int | ShortText
    match_id: MatchId
    league: ShortText | None = None
    home_team: ShortText | None = None
    away_team: ShortText | None = None
    prediction: Outcome
    confidence: Probability
    home_win_prob: Probability
    draw_prob: Probability
    away_win_prob: Probability
    expected_value: float | None = None
    strategy: ShortText | None = None


class PredictionCreated(_PredictionBase):
    """A new prediction (seed: 预测事件 PREDICTION_CREATED)."""


class PredictionUpdated(_PredictionBase):
    """A prediction changed, e.g. in play after a goal."""

    minute: Annotated[int, Field(ge=0, le=150)] | None = None
    home_score: Annotated[int, Field(ge=0)] | None = None
    away_score: Annotated[int, Field(ge=0)] | None = None
    reason: ShortText | None = None


class PredictionCompleted(Payload):
    """A prediction is settled: the match ended and the outcome is known."""

    prediction_id: int | ShortText
    match_id: MatchId
    league: ShortText | None = None
    prediction: Outcome
    actual_result: Outcome
    is_correct: bool
    home_score: Annotated[int, Field(ge=0)]
    away_score: Annotated[int, Field(ge=0)]
    confidence: Probability | None = None
    home_win_prob: Probability | None = None
    draw_prob: Probability | None = None
    away_win_prob: Probability | None = None


class MatchStarted(Payload):
    match_id: MatchId
    home_team: ShortText
    away_team: ShortText
    league: ShortText | None = None
    start_time: IsoTimestamp | None = None
    venue: ShortText | None = None


class MatchScoreChanged(Payload):
    match_id: MatchId
    league: ShortText | None = None
    home_score: Annotated[int, Field(ge=0)]
    away_score: Annotated[int, Field(ge=0)]
    scoring_team: Side | None = None
    scoring_player: ShortText | None = None
    minute: Annotated[int, Field(ge=0, le=150)] | None = None
    timestamp: IsoTimestamp | None = None


class MatchStatusChanged(Payload):
    match_id: MatchId
    league: ShortText | None = None
    status: Literal[
        "scheduled",
        "first_half",
        "half_time",
        "second_half",
        "extra_time",
        "penalties",
        "finished",
        "postponed",
        "suspended",
        "cancelled",
    ]
    previous_status: ShortText | None = None
    minute: Annotated[int, Field(ge=0, le=150)] | None = None


class MatchEnded(Payload):
    match_id: MatchId
    league: ShortText | None = None
    home_team: ShortText | None = None
    away_team: ShortText | None = None
    home_score: Annotated[int, Field(ge=0)]
    away_score: Annotated[int, Field(ge=0)]
    result: Outcome | None = None


class OddsChange(Payload):
    home: float
    draw: float
    away: float


class OddsUpdated(Payload):
    """Bookmaker odds for a match; ``change`` is new minus previous decimal odds."""

    match_id: MatchId
    league: ShortText | None = None
    bookmaker: ShortText
    home_odds: Odds
    draw_odds: Odds
    away_odds: Odds
    change: OddsChange | None = None


class OddsSignificantChange(Payload):
    """One outcome's odds moved past the publisher's threshold."""

    match_id: MatchId
    league: ShortText | None = None
    bookmaker: ShortText
    outcome: Literal["home", "draw", "away"]
    old_odds: Odds
    new_odds: Odds
    change_pct: float
    threshold_pct: float | None = None


class SystemAlert(Payload):
    alert_type: Literal["error", "warning", "info"]
    message: Annotated[str, Field(min_length=1, max_length=2000)]
    severity: Literal["low", "medium", "high", "critical"]
    component: ShortText
    details: dict[str, Any] | None = None


class SystemStatus(Payload):
    status: Literal["healthy", "degraded", "down", "maintenance"]
    message: Annotated[str, Field(max_length=2000)] | None = None
    components: dict[str, Any] | None = None


class DataRefresh(Payload):
    """Clients should reload a kind of data (e.g. after a correction)."""

    data_type: ShortText
    reason: ShortText | None = None
    match_ids: list[MatchId] | None = None


class AnalyticsUpdated(Payload):
    """Running quality of predictions; ``metrics`` carries any extra figures."""

    period: ShortText | None = None
    total_predictions: Annotated[int, Field(ge=0)] | None = None
    accuracy: Probability | None = None
    hit_rate: Probability | None = None
    brier_score: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    metrics: dict[str, float] | None = None


class UserSubscriptionChanged(Payload):
    """Sent to every connection of a user when one of them subscribes or unsubscribes,
    and for each subscription a resumed durable session restores (``restored: true``,
    with ``streams`` positions and ``recovered``; to the connection itself when it is
    anonymous, ``user_id`` then null)."""

    user_id: str | None
    connection_id: str
    action: Literal["subscribed", "unsubscribed"]
    subscription_id: str
    subscription: dict[str, Any] | None = None
    subscriptions: list[dict[str, Any]]
    restored: bool | None = None
    streams: dict[str, dict[str, Any]] | None = None
    recovered: bool | None = None
    reason: str | None = None


class SessionInfo(BaseModel):
    """The durable session a connection opened (``connection_status`` ``connected``)."""

    model_config = ConfigDict(extra="allow", strict=True)
    id: str
    resumed: bool
    expires_in: float
    reason: str | None = None


class ConnectionStatus(Payload):
    """Server-side connection state; ``connected`` carries the connection's details."""

    status: Literal["connected", "closing", "warning", "authenticated"]
    connection_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    subscriptions: list[dict[str, Any]] | None = None
    heartbeat_interval: float | None = None
    server_time: str | None = None
    instance_id: str | None = None
    session: SessionInfo | None = None


PAYLOAD_MODELS: dict[EventType, type[Payload]] = {
    EventType.CONNECTION_STATUS: ConnectionStatus,
    EventType.PREDICTION_CREATED: PredictionCreated,
    EventType.PREDICTION_UPDATED: PredictionUpdated,
    EventType.PREDICTION_COMPLETED: PredictionCompleted,
    EventType.MATCH_STARTED: MatchStarted,
    EventType.MATCH_SCORE_CHANGED: MatchScoreChanged,
    EventType.MATCH_STATUS_CHANGED: MatchStatusChanged,
    EventType.MATCH_ENDED: MatchEnded,
    EventType.ODDS_UPDATED: OddsUpdated,
    EventType.ODDS_SIGNIFICANT_CHANGE: OddsSignificantChange,
    EventType.SYSTEM_ALERT: SystemAlert,
    EventType.SYSTEM_STATUS: SystemStatus,
    EventType.USER_SUBSCRIPTION_CHANGED: UserSubscriptionChanged,
    EventType.DATA_REFRESH: DataRefresh,
    EventType.ANALYTICS_UPDATED: AnalyticsUpdated,
}


class RealtimeEvent(BaseModel):
    """The envelope every event travels in (seed: 事件结构).

    ``stream`` and ``offset`` are set by publishing; a publisher leaves them empty.
    """

    model_config = ConfigDict(extra="forbid")

    event_type: EventType
    data: dict[str, Any]
    timestamp: IsoTimestamp = Field(default_factory=utc_now_iso)
    source: Annotated[str, Field(max_length=200)] | None = None
    correlation_id: Annotated[str, Field(max_length=200)] | None = None
    stream: SubscriptionType | None = None
    offset: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to clients; absent optional fields are omitted."""
        return self.model_dump(mode="json", exclude_none=True)


class EventValidationError(LocalError, ValueError):
    """A published event was refused; ``errors`` name each field at fault."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def validate_payload(event_type: EventType, data: dict[str, Any]) -> None:
    """Check ``data`` against the payload model of ``event_type``.

    Raises :class:`EventValidationError` naming every field at fault (as ``data.<field>``).
    The data itself is published unchanged.
    """
    try:
        PAYLOAD_MODELS[event_type].model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": "data." + _loc(e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise EventValidationError(
            f"invalid {event_type.value} payload: {summary}", errors
        ) from None


def prepare_published_event(
    event: RealtimeEvent | dict[str, Any],
) -> RealtimeEvent:
    """Validate an event a publisher hands in and return the envelope to publish.

    Refuses server-only event types and payloads that fail their model.
    """
    if isinstance(event, dict):
        try:
            event = RealtimeEvent.model_validate(event)
        except ValidationError as exc:
            errors = [
                {"field": _loc(e["loc"]), "message": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise EventValidationError(f"invalid event: {summary}", errors) from None
    if event.event_type in CONNECTION_EVENT_TYPES:
        raise EventValidationError(
            f"{event.event_type.value} is sent by the server itself and cannot be published",
            [{"field": "event_type", "message": "server-only event type", "type": "value_error"}],
        )
    validate_payload(event.event_type, event.data)
    try:
        # What JSON parsers other than orjson let through (the REST body is parsed by
        # FastAPI) must still encode: refused here, before a broker assigns an offset.
        orjson.dumps(event.data)
    except orjson.JSONEncodeError as exc:
        message = f"cannot be sent as JSON ({exc}): integers must fit in 64 bits"
        raise EventValidationError(
            f"invalid event: data: {message}",
            [{"field": "data", "message": message, "type": "value_error"}],
        ) from None
    return event


def prepare_envelope(
    event: RealtimeEvent | dict[str, Any],
) -> tuple[dict[str, Any], SubscriptionType]:
    """Validate an event and return its envelope (without stream and offset, which
    publishing assigns) and the stream it belongs to."""
    ev = prepare_published_event(event)
    envelope = ev.to_wire()
    envelope.pop("stream", None)
    envelope.pop("offset", None)
    return envelope, EVENT_STREAM[ev.event_type]
