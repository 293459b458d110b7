"""The REST API's request and answer models (docs/protocol.md, REST), as the OpenAPI
document publishes them: the broadcast body is one variant per publishable event type
whose ``data`` is that type's payload model, ``target`` naming exactly one recipient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    create_model,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ..core.events import (
    EVENT_STREAM,
    PAYLOAD_MODELS,
    EventType,
    IsoTimestamp,
)
from ..service.control_store import MAX_BAN_SECONDS

if TYPE_CHECKING:
    pass


#: ``target`` names exactly one recipient: one of the three fields is a string, the
#: others absent or null (the schema of :meth:`Target._exactly_one`).
_ONE_TARGET: dict[str, Any] = {
    "oneOf": [
        {"required": [k], "properties": {k: {"type": "string"}}}
        for k in ("user_id", "connection_id", "room")
    ]
}


class Target(BaseModel):
    """Exactly one of ``user_id``, ``connection_id``, ``room``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_TARGET)
    user_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    connection_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    room: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [k for k in ("user_id", "connection_id", "room") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("target must name exactly one of user_id, connection_id, room")
        return self


_Text200 = Annotated[str, Field(max_length=200)]
#: ``Literal`` with a value known only at run time.
_Literal: Any = Literal


def broadcast_variant(et: EventType) -> type[BaseModel]:
    """The documented body for one event type: its ``data`` is that type's payload."""
    name = "".join(p.capitalize() for p in et.value.split("_"))
    model: type[BaseModel] = create_model(
        f"Broadcast{name}",
        __config__=ConfigDict(extra="forbid"),
        __module__=__name__,
        event_type=(_Literal[et.value], ...),
        data=(PAYLOAD_MODELS[et], ...),
        source=(_Text200 | None, None),
        correlation_id=(_Text200 | None, None),
        timestamp=(IsoTimestamp | None, None),
        target=(Target | None, None),
        idempotency_key=(Annotated[str, Field(min_length=1, max_length=200)] | None, None),
    )
    return model


def broadcast_union() -> Any:
    variants: Any = None
    for et in EVENT_STREAM:  # the publishable event types, in protocol order
        v = broadcast_variant(et)
        variants = v if variants is None else variants | v
    return Annotated[variants, Field(discriminator="event_type")]


#: The documented broadcast body (validation stays with BroadcastRequest).
_BROADCAST_SCHEMA = TypeAdapter(broadcast_union())


class BroadcastRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "event_type": "match_score_changed",
                "data": {"match_id": 456, "home_score": 1, "away_score": 0, "minute": 25},
                "source": "data-service",
                "target": None,
            }
        },
    )
    event_type: EventType
    data: dict[str, Any]
    source: Annotated[str, Field(max_length=200)] | None = None
    correlation_id: Annotated[str, Field(max_length=200)] | None = None
    timestamp: str | None = None
    target: Target | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(_BROADCAST_SCHEMA.core_schema)
        extra = cls.model_config.get("json_schema_extra")
        if isinstance(extra, dict):
            schema.update(extra)  # the example
        schema["description"] = (
            "An event to publish, or to send to one target. One variant per publishable "
            "event type; `data` is that type's payload (unknown payload fields are kept)."
        )
        return schema


class DisconnectRequest(BaseModel):
    """Optional body of ``POST /realtime/users/{user_id}/disconnect``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"ban_seconds": 600, "reason": "abuse"}},
    )
    # strict: a JSON boolean is not a number of seconds (pydantic would take false as 0)
    ban_seconds: Annotated[float, Field(ge=0, le=MAX_BAN_SECONDS, strict=True)] = 0
    reason: Annotated[str, Field(max_length=200, strict=True)] = ""


class DisconnectResult(BaseModel):
    user_id: str
    #: Connections closed on the instance that answered (the others close theirs
    #: within milliseconds, through the control channel).
    closed_here: int
    banned_until: str | None = None


class BroadcastResult(BaseModel):
    accepted: bool
    event_type: str
    stream: str | None = None
    offset: int | None = None
    epoch: str | None = None
    duplicate: bool | None = None
    target: dict[str, str] | None = None
    recipients: int | None = None


class ErrorMessage(BaseModel):
    """Why a request was refused."""

    detail: str
