"""REST endpoints (seed: REST API端点): health, stats, connection details, broadcast.

The OpenAPI document states every answer an endpoint gives (401/403 for the admin
endpoints, 404, 413 from :class:`BodySizeLimit`, 422, 503 with ``Retry-After``) and the
broadcast body as the server checks it: one variant per publishable event type whose
``data`` is that type's payload model, ``target`` naming exactly one recipient. The
body is still validated at run time by :class:`BroadcastRequest` and
``prepare_published_event`` (so a refusal names ``body.data.<field>``); only its
published schema is the per-type union (``tests/edges/test_openapi_conformance.py`` runs
schemathesis against it).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from .._version import __version__
from ..auth import AuthError
from ..brokers.base import BrokerUnavailable
from ..core.events import (
    EventValidationError,
)
from ..logs import current_correlation_id
from .rest_models import (
    BroadcastRequest,
    BroadcastResult,
    DisconnectRequest,
    DisconnectResult,
    ErrorMessage,
)

if TYPE_CHECKING:
    from ..service.realtime import RealtimeService

log = logging.getLogger("football_realtime.api")


#: JWT roles that may use the admin endpoints.
ADMIN_ROLES = frozenset({"admin", "service"})


def _answer(description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorMessage, "description": description}
    if headers:
        out["headers"] = {
            h: {"description": d, "schema": {"type": "string"}} for h, d in headers.items()
        }
    return out


#: Answers every endpoint may give.
ANY_ENDPOINT: dict[int | str, dict[str, Any]] = {
    413: _answer("The request body is larger than REALTIME_MAX_REQUEST_BODY (64 KiB).")
}
#: Answers of the admin endpoints.
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    401: _answer(
        "No, or an invalid, admin token or JWT.",
        **{"WWW-Authenticate": "Bearer"},
    ),
    403: _answer("The JWT is valid but has neither role admin nor service."),
}
_RETRY = {"Retry-After": "Seconds to wait before retrying."}


def build_api_router(rt: RealtimeService, admin_token: str) -> APIRouter:
    router = APIRouter(responses=ANY_ENDPOINT)

    def require_admin(
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        """The admin token, or a JWT whose ``roles`` include ``admin`` or ``service``."""
        if authorization is None or authorization[:7].lower() != "bearer ":
            raise HTTPException(
                401,
                "missing Authorization: Bearer <admin token or JWT with role admin/service>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = authorization[7:].strip()
        if secrets.compare_digest(given.encode(), admin_token.encode()):
            return
        if not rt.verifier.enabled or given.count(".") != 2:
            raise HTTPException(401, "invalid admin token", headers={"WWW-Authenticate": "Bearer"})
        try:
            identity = rt.verifier.verify(given)
        except AuthError as exc:
            raise HTTPException(
                401, f"invalid token: {exc.reason}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        if not identity.roles & ADMIN_ROLES:
            raise HTTPException(403, "the token needs role admin or service")

    admin = [Depends(require_admin)]

    @router.get(
        "/health",
        summary="Service health",
        tags=["realtime"],
        responses={503: {"description": "Degraded: the broker is unreachable (same body)."}},
    )
    async def health() -> JSONResponse:
        ok = await rt.broker.healthy()
        body = {
            "status": "ok" if ok else "degraded",
            "broker": rt.broker.name,
            "broker_healthy": ok,
            "active_connections": len(rt.hub.connections),
            "uptime_seconds": round(rt.stats.uptime, 3),
            "version": __version__,
            "instance_id": rt.settings.instance_id,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/health/live", summary="Liveness (the process answers)", tags=["realtime"])
    async def live() -> dict[str, str]:
        # For liveness probes: no broker check, so a Redis outage marks instances
        # unready (/health) without getting them restarted.
        return {"status": "alive", "instance_id": rt.settings.instance_id}

    @router.get("/stats", summary="Service statistics", tags=["realtime"])
    async def stats() -> dict[str, Any]:
        snap = rt.stats_snapshot()
        snap["cluster"] = await rt.cluster.overview()
        return snap

    @router.get(
        "/connections/{connection_id}",
        summary="One connection's details (admin)",
        tags=["realtime"],
        dependencies=admin,
        responses={
            **ADMIN_ONLY,
            404: _answer("No such connection on any instance."),
            503: _answer(
                "Not on this instance, and the cluster registry (Redis) is unreachable.", **_RETRY
            ),
        },
    )
    async def connection(connection_id: str) -> dict[str, Any]:
        conn = rt.hub.connections.get(connection_id)
        if conn is not None:
            d = conn.describe()
            d["instance_id"] = rt.settings.instance_id
            d["local"] = True
            return d
        try:
            remote = await rt.cluster.lookup(connection_id)
        except (RedisError, OSError) as exc:
            raise HTTPException(
                503,
                f"connection {connection_id!r} is not on this instance and the cluster "
                f"registry is unavailable: {exc}",
                headers={"Retry-After": "1"},
            ) from None
        if remote is None:
            raise HTTPException(404, f"no connection {connection_id!r}")
        return remote

    @router.post(
        "/users/{user_id}/disconnect",
        summary="Close a user's connections on every instance, and optionally ban it (admin)",
        tags=["realtime"],
        dependencies=admin,
        response_model=DisconnectResult,
        response_model_exclude_none=True,
        responses={
            **ADMIN_ONLY,
            400: _answer("The body could not be read (e.g. not UTF-8, or not JSON at all)."),
            503: _answer(
                "The control channel (Redis) is unreachable: this instance's connections "
                "of the user were closed, the other instances' were not.",
                **_RETRY,
            ),
        },
    )
    async def disconnect_user(
        user_id: Annotated[str, Path(min_length=1, max_length=128)],
        body: DisconnectRequest | None = None,
    ) -> DisconnectResult:
        """Every connection of ``user_id``, on every instance, is sent ``connection_status``
        ``closing`` (``reconnect: false``) and closed with 4506 within a second; with
        ``ban_seconds`` the user's new connections are refused (``error`` ``banned``, then
        4506) until the ban ends."""
        req = body if body is not None else DisconnectRequest()
        try:
            done = await rt.control.disconnect(user_id, req.ban_seconds, req.reason)
        except (RedisError, OSError) as exc:
            raise HTTPException(
                503,
                f"control channel unavailable: {exc}; the user's connections on this instance "
                "were closed, the other instances were not told",
                headers={"Retry-After": "1"},
            ) from None
        log.info(
            "user disconnected by an administrator",
            extra={"user_id": user_id, "ban_seconds": req.ban_seconds, "reason": req.reason},
        )
        until = done["banned_until"]
        return DisconnectResult(
            user_id=user_id,
            closed_here=done["closed_here"],
            banned_until=(
                datetime.fromtimestamp(until, UTC).isoformat(timespec="milliseconds")
                if until is not None
                else None
            ),
        )

    @router.post(
        "/broadcast",
        summary="Publish an event, or send it to one user, connection or room (admin)",
        tags=["realtime"],
        dependencies=admin,
        response_model=BroadcastResult,
        response_model_exclude_none=True,
        responses={
            **ADMIN_ONLY,
            400: _answer("The body could not be read (e.g. not UTF-8, or not JSON at all)."),
            503: _answer("The broker (Redis) is unreachable; nothing was published.", **_RETRY),
        },
    )
    async def broadcast(
        body: BroadcastRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> BroadcastResult:
        event: dict[str, Any] = {"event_type": body.event_type, "data": body.data}
        for k in ("source", "correlation_id", "timestamp"):
            v = getattr(body, k)
            if v is not None:
                event[k] = v
        # The caller's X-Correlation-ID travels on with the event unless it names its own.
        if "correlation_id" not in event and (cid := current_correlation_id()) is not None:
            event["correlation_id"] = cid
        try:
            if body.target is not None:
                tgt = body.target.model_dump(exclude_none=True)
                n = rt.send(event, **tgt)
                log.info(
                    "broadcast sent to target",
                    extra={
                        "event_type": body.event_type.value,
                        "target": tgt,
                        "recipients": n,
                        "correlation_id": event.get("correlation_id"),
                    },
                )
                return BroadcastResult(
                    accepted=True, event_type=body.event_type, target=tgt, recipients=n
                )
            res = await rt.publish(event, idempotency_key=idempotency_key or body.idempotency_key)
        except EventValidationError as exc:
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", *e["field"].split(".")],
                        "msg": e["message"],
                        "type": e["type"],
                    }
                    for e in exc.errors
                ],
            ) from None
        except BrokerUnavailable as exc:
            raise HTTPException(
                503, f"broker unavailable: {exc}", headers={"Retry-After": "1"}
            ) from None
        log.info(
            "broadcast published",
            extra={
                "event_type": body.event_type.value,
                "stream": res.stream.value,
                "offset": res.offset,
                "duplicate": res.duplicate,
                "correlation_id": event.get("correlation_id"),
            },
        )
        return BroadcastResult(
            accepted=True,
            event_type=body.event_type,
            stream=res.stream,
            offset=res.offset,
            epoch=res.epoch,
            duplicate=res.duplicate or None,
        )

    return router
