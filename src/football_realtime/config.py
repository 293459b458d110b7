"""Settings: one model, read from ``REALTIME_*`` environment variables and CLI flags."""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .core.events import EVENT_STREAM

#: The seed's tier policy (权限控制 and 敏感数据过滤): ``free`` receives only new
#: predictions and kick-offs, without the model's expected value and strategy; paid
#: tiers receive everything. A tier without ``event_types`` receives every event type;
#: ``hidden_fields`` keys are event types or stream names.
DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    "free": {
        "event_types": ["prediction_created", "match_started"],
        "hidden_fields": {"predictions": ["expected_value", "strategy"]},
    },
    "premium": {},
}


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: REALTIME_SESSION_CRITICAL_TYPES's default: what a client must not miss.
DEFAULT_CRITICAL_TYPES: tuple[str, ...] = (
    "match_score_changed",
    "match_status_changed",
    "match_ended",
    "prediction_created",
    "prediction_updated",
    "prediction_completed",
)


def _json_or_commas(value: Any) -> Any:
    """A JSON list (``["a", "b"]``) or comma-separated names (``a,b``)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not a JSON list: {exc}") from None
    return _split_commas(value)


class Settings(BaseSettings):
    """Every setting of the service. docs/configuration.md is generated from this model."""

    model_config = SettingsConfigDict(env_prefix="REALTIME_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address `serve` listens on.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8000, description="Port `serve` listens on."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for the admin REST endpoints (broadcast, connection "
        "details). Unset: a random token is generated at start-up and printed once.",
    )
    broker_url: str = Field(
        "memory://",
        description="`memory://` (one process), `redis://host:port/db`, "
        "`redis+sentinel://host:port[,host:port...]/master_name[/db]` (the master found "
        "through Redis Sentinel; failover followed), or "
        "`redis+cluster://host:port[,host:port...]` (Redis Cluster startup nodes: streams "
        "spread over the shards; a shard's failover followed); docs/scaling.md.",
    )
    redis_min_replicas: Annotated[int, Field(ge=0, le=64)] = Field(
        0,
        description="Redis broker: a publish succeeds only once this many replicas hold it "
        "(`WAIT`, up to 1 s; else 503 `only k of N replicas acknowledged`), and instances "
        "deliver only such events, so a failover loses no acknowledged event. 0: "
        "acknowledged by the master alone (faster; a failover may lose the newest "
        "events, and their subscribers get `recovered: false`).",
    )
    redis_max_connections: Annotated[int, Field(ge=2, le=10_000)] = Field(
        32,
        description="Redis broker: connections each Redis client of a process may open "
        "(the shared one for publishes, subscribes, per-user counts and the registry, one "
        "of whose connections the control channel's reader holds; the reader's; on a "
        "cluster per node). A command finding them all busy waits up to 2 s "
        "for one, then fails as unavailable (subscribe `unavailable`, HTTP 503). Per "
        "process: `serve --workers N` opens up to N times this (twice: shared and reader). "
        "32: a handshake holds a connection for one round trip at a time, so a burst of "
        "hundreds queues for milliseconds instead of failing, and dozens of processes stay "
        "below Redis's `maxclients` (docs/scaling.md, Connections to Redis).",
    )
    history_size: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        10_000, description="Events kept per stream for recovery."
    )
    history_ttl: Annotated[float, Field(gt=0)] = Field(
        600.0, description="Seconds an event stays in a stream's history."
    )
    cluster_heartbeat_interval: Annotated[float, Field(gt=0, le=300)] = Field(
        5.0,
        description="Seconds between an instance's heartbeats into the cluster registry "
        "(Redis broker); its registrations expire after three missed heartbeats.",
    )
    max_message_size: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = Field(
        65536, description="Largest client message in bytes; larger closes with 1009."
    )
    outbound_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        1024 * 1024,
        description="Bytes a connection may have queued for sending; past that it is "
        "closed with 4001 (slow consumer).",
    )
    ping_interval: Annotated[float, Field(gt=0)] = Field(
        25.0, description="Seconds between server WebSocket pings."
    )
    ping_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0,
        description="Seconds to wait for a pong (or any client message) before closing "
        "a silent connection.",
    )
    heartbeat_interval: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Application heartbeat interval advertised to clients, seconds."
    )
    max_subscriptions_per_connection: Annotated[int, Field(ge=1)] = Field(
        64, description="Subscriptions one connection may hold."
    )
    max_rooms_per_connection: Annotated[int, Field(ge=0)] = Field(
        32, description="Rooms one connection may join."
    )
    max_connections: Annotated[int, Field(ge=1)] = Field(
        200_000, description="Connections one instance accepts; past that new ones get 1013."
    )
    instance_id: str = Field(
        default_factory=lambda: secrets.token_hex(4),
        description="Name of this instance in stats and the cluster registry.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`: one readable line per record; `json`: one JSON object per line "
        "with `connection_id`, `user_id` and `correlation_id` (for log shippers).",
    )
    access_log: bool = Field(True, description="Write HTTP access log lines (tokens redacted).")
    shutdown_timeout: Annotated[int, Field(ge=0, le=3600)] = Field(
        10,
        description="Seconds `serve` waits on SIGTERM for connections and requests to finish "
        "before closing them (keep below the orchestrator's grace period).",
    )
    workers: Annotated[int, Field(ge=1, le=512)] = Field(
        1,
        description="Processes `serve` runs on one port (Linux `SO_REUSEPORT`: the kernel "
        "spreads connections), each an instance of the cluster; worker k also answers on "
        "port + k for its own `/metrics` and stats. Above 1 a Redis broker is required "
        "(memory:// keeps events in one process); docs/scaling.md.",
    )
    compression: Literal["off", "shared"] = Field(
        "shared",
        description="permessage-deflate (RFC 7692) on `serve`'s WebSocket layer. `shared`: "
        "negotiated when the client offers it, answered with `server_no_context_takeover`, "
        "so each message is compressed on its own, once per event and tier view, and the "
        "same compressed frame goes to every connection that negotiated it. `off`: never "
        "negotiated (a compressed client frame closes with 1002).",
    )
    compression_min_bytes: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = Field(
        80,
        description="With compression: messages shorter than this many bytes go "
        "uncompressed (below ~80 bytes of JSON, deflate does not make a frame smaller).",
    )
    fast_transport: bool = Field(
        True,
        description="`serve`'s WebSocket layer offers the service direct writes of "
        "pre-built frames to the socket. False: the same layer without them (the service "
        "sends through the ASGI interface, a writer task per connection).",
    )

    # -- security (docs/security.md) ---------------------------------------------
    require_auth: bool = Field(
        False,
        description="Refuse connections without a valid token (query `token`, "
        "`Authorization: Bearer`, or a first `auth` message). False: tokenless "
        "connections are anonymous with the default tier.",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HMAC secret for HS256/HS384/HS512 tokens (at least 32 bytes)."
    )
    jwt_public_key: str | None = Field(
        None,
        description="PEM public key (or a path to one) for RS256/ES256-family tokens.",
    )
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated accepted algorithms, never taken from the token. "
        "Empty: HS256 with a secret, plus RS256 or ES256 matching the public key.",
    )
    jwt_audience: str | None = Field(
        None, description="Required `aud` claim; unset: `aud` is not checked."
    )
    jwt_issuer: str | None = Field(
        None, description="Required `iss` claim (exact match); unset: not checked."
    )
    jwt_leeway: Annotated[float, Field(ge=0, le=600)] = Field(
        30.0, description="Clock-skew leeway for `exp`/`nbf`/`iat`, seconds."
    )
    auth_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0,
        description="Seconds a connection without a token has to send `auth` "
        "(REALTIME_REQUIRE_AUTH=true); then it is closed with 4505.",
    )
    token_expiry_warning: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="Seconds before a token's `exp` that the connection gets a "
        "`connection_status` warning asking for a refresh.",
    )
    tiers: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TIERS.items()},
        description='Tier policy as JSON: {"<tier>": {"event_types": [...] | null, '
        '"hidden_fields": {"<event type or stream>": ["field", ...]}, '
        '"delay_seconds": {"<event type or stream>": s}, '
        '"min_interval_seconds": {"<odds_updated | system_status | analytics_updated '
        '| stream>": s}}}. See docs/security.md (Tiers, Timeliness).',
    )
    default_tier: str = Field(
        "free", description="Tier of anonymous connections and of tokens without `tier`."
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated exact Origins allowed to open WebSockets; a handshake "
        "with another Origin gets HTTP 403. Empty: any Origin. No Origin header "
        "(non-browser clients): always allowed.",
    )
    max_connections_per_user: Annotated[int, Field(ge=1)] = Field(
        10,
        description="Connections one user may hold on every instance together (Redis broker: "
        "counted over the cluster; memory: this instance); more get 4504.",
    )
    max_connections_per_ip: Annotated[int, Field(ge=1)] = Field(
        100, description="Connections one client address may hold on this instance; more get 4504."
    )
    rate_limit_per_second: Annotated[float, Field(gt=0)] = Field(
        20.0, description="Client messages per second a connection may send (token bucket)."
    )
    rate_limit_burst: Annotated[int, Field(ge=1)] = Field(
        100, description="Token-bucket size: messages a connection may send at once."
    )
    rate_limit_violations: Annotated[int, Field(ge=1)] = Field(
        20,
        description="Consecutive `rate_limited` refusals after which the connection is "
        "closed with 1008.",
    )
    max_pings_per_second: Annotated[float, Field(gt=0)] = Field(
        5.0,
        description="WebSocket pings per second a client may send (burst 20); past that "
        "it is closed with 1008.",
    )
    max_fragments: Annotated[int, Field(ge=1)] = Field(
        4096, description="Frames one fragmented client message may have; more closes 1009."
    )
    max_request_body: Annotated[int, Field(ge=1024)] = Field(
        65536, description="Largest REST request body in bytes; larger gets HTTP 413."
    )
    handshake_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0,
        description="Seconds a client has to send complete HTTP request headers "
        "(slowloris guard); then the TCP connection is closed.",
    )

    # -- durable sessions (docs/protocol.md, Sessions) ----------------------------
    session_ttl: Annotated[float, Field(gt=0, le=30 * 86400)] = Field(
        900.0,
        description="Seconds a durable session (`session_id` with `resume=1`) is kept after "
        "its last connection closes; its subscriptions and acknowledged positions live in "
        "the broker (Redis: any instance resumes it; memory: this process).",
    )
    session_flush_interval: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0,
        description="Seconds between writes of acknowledged positions to the broker "
        "(coalesced per session; subscription changes and closes are written at once). "
        "An instance crash loses at most this much of acknowledgements: those events are "
        "sent again on resume and the clients drop them by offset.",
    )
    max_sessions_per_user: Annotated[int, Field(ge=1)] = Field(
        10,
        description="Durable sessions one authenticated user may hold (live or waiting to "
        "be resumed); a new one beyond that is refused with `session_refused` (4503).",
    )
    session_max_subscriptions: Annotated[int, Field(ge=1)] = Field(
        64,
        description="Subscriptions one durable session may hold (`limit_exceeded` beyond).",
    )
    session_max_bytes: Annotated[int, Field(ge=512, le=1024 * 1024)] = Field(
        16384,
        description="Largest stored state of one durable session (subscriptions with "
        "filters, positions), bytes; a subscribe that would exceed it gets `limit_exceeded`.",
    )

    session_critical_types: Annotated[list[str], NoDecode] = Field(
        list(DEFAULT_CRITICAL_TYPES),
        description="Event types a durable session must not miss (comma-separated or a JSON "
        "list; empty: none). The broker keeps each stream's events of these types "
        "`REALTIME_SESSION_TTL` seconds (at most `REALTIME_SESSION_CRITICAL_SIZE` per "
        "stream), beyond the history: a session resumed after its stream's history no "
        "longer reaches back to its acknowledged offset still gets them (docs/protocol.md, "
        "Sessions). Only these events pay the extra write.",
    )
    session_critical_size: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        10_000,
        description="Critical events (`REALTIME_SESSION_CRITICAL_TYPES`) kept per stream "
        "for durable sessions, at most; the oldest go first.",
    )

    @model_validator(mode="after")
    def _workers_share_a_broker(self) -> Settings:
        if self.workers > 1 and self.broker_url.partition("://")[0] in ("memory", ""):
            raise ValueError(
                f"REALTIME_WORKERS={self.workers} needs a broker the processes share: "
                f"REALTIME_BROKER_URL={self.broker_url} keeps events inside one process, so "
                "each worker would be an island. Set REALTIME_BROKER_URL=redis://HOST:PORT/DB "
                "(or redis+sentinel://, redis+cluster://), or run one process"
            )
        return self

    @field_validator("jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("session_critical_types", mode="before")
    @classmethod
    def _critical_list(cls, value: Any) -> Any:
        return _json_or_commas(value)

    @field_validator("session_critical_types")
    @classmethod
    def _known_event_types(cls, value: list[str]) -> list[str]:
        known = [t.value for t in EVENT_STREAM]
        unknown = [t for t in value if t not in known]
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(repr(t) for t in unknown)}; "
                f"publishable event types are: {', '.join(known)}"
            )
        return list(dict.fromkeys(value))

    @field_validator("jwt_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (RFC 7518 §3.2)")
        return value
