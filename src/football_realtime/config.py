"""Settings: one model, read from ``REALTIME_*`` environment variables and CLI flags."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        "memory://", description="`memory://` (one process) or `redis://host:port/db`."
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
    fast_transport: bool = Field(
        True,
        description="`serve` runs the WebSocket layer that writes pre-built frames "
        "straight to the socket. False: uvicorn's stock websockets-sansio layer.",
    )
