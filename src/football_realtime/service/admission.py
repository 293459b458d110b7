"""Admission: whether a WebSocket handshake may open a connection (docs/security.md).

Checks, in order: the Origin (exact match against REALTIME_ALLOWED_ORIGINS), the
connection limit per client address, the credentials (``token`` query parameter or
``Authorization: Bearer``; none under REALTIME_REQUIRE_AUTH means a first ``auth``
message must follow), an administrator's ban of the user, and the connection limit per
user on this instance (the cluster-wide count follows: ``Sessions.reserve``). The handshake is read through
:class:`Handshake`, so this module knows no web framework; the WebSocket endpoint
adapts its request to it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Set
from typing import Protocol

from ..auth import AuthError, Identity, TokenVerifier
from ..config import Settings
from ..core.close_codes import CloseCode
from ..core.errors import LocalError
from ..core.permissions import Tier, TierPolicy
from ..stats import ServiceStats

log = logging.getLogger("football_realtime.security")


class Handshake(Protocol):
    """What admission reads of an upgrade request."""

    @property
    def client_host(self) -> str:
        """The client's address (after trusted proxies' X-Forwarded-For), or "unknown"."""
        ...

    def header_values(self, name: str) -> list[str]:
        """Every value of the (lower-case) header ``name``."""
        ...

    def query_value(self, name: str) -> str | None: ...


class Refused(LocalError):
    """A connection may not open (or go on): close it with ``code`` after an ``error``."""

    def __init__(self, code: CloseCode, reason: str, error_code: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error_code = error_code


class Admission:
    """Admits handshakes and counts connections per client address (one per service)."""

    def __init__(
        self,
        settings: Settings,
        stats: ServiceStats,
        verifier: TokenVerifier,
        policy: TierPolicy,
        user_connections: Mapping[str, Set[str]],
        banned: Callable[[str], str | None] | None = None,
    ) -> None:
        """``banned``: why a user may not connect now (an administrator's ban on any
        instance: service/control.py), or None."""
        self.settings = settings
        self.banned = banned
        self.stats = stats
        self.verifier = verifier
        self.policy = policy
        #: The hub's user -> connection ids, read for the per-user limit.
        self.user_connections = user_connections
        self.allowed_origins = frozenset(settings.allowed_origins)
        self.ip_connections: Counter[str] = Counter()
        if settings.require_auth and not verifier.enabled:
            raise ValueError(
                "REALTIME_REQUIRE_AUTH=true needs REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY"
            )

    # -- handshake ---------------------------------------------------------------

    def check_origin(self, handshake: Handshake) -> str | None:
        """None when the handshake may proceed, else why not (answered with HTTP 403).

        Exact string match against REALTIME_ALLOWED_ORIGINS; a request without an
        Origin header (not a browser) is not affected.
        """
        if not self.allowed_origins:
            return None
        origins = handshake.header_values("origin")
        if not origins:
            return None
        if len(origins) == 1 and origins[0] in self.allowed_origins:
            return None
        self.stats.errors_by_code["forbidden_origin"] += 1
        log.warning(
            "refused WebSocket handshake from %s: Origin %s is not allowed",
            handshake.client_host,
            ", ".join(repr(o[:200]) for o in origins),
        )
        return "origin not allowed"

    def token_from(self, handshake: Handshake) -> str | None:
        """The token of the handshake: ``?token=`` or ``Authorization: Bearer``."""
        token = handshake.query_value("token")
        if token:
            return token
        headers = handshake.header_values("authorization")
        header = headers[0] if headers else None
        if header is not None and header[:7].lower() == "bearer ":
            return header[7:].strip() or None
        return None

    def identify(self, token: str) -> tuple[Identity, Tier]:
        """Verify a token and resolve its tier. Raises :class:`AuthError`."""
        identity = self.verifier.verify(token)
        name = identity.tier if identity.tier is not None else self.policy.default_tier
        tier = self.policy.get(name)
        if tier is None:
            raise AuthError(f"unknown tier {name[:64]!r}")
        return identity, tier

    def admit(
        self, handshake: Handshake, user_id: str | None
    ) -> tuple[str, Identity | None, Tier, bool]:
        """Decide whether a handshake may open a connection.

        Returns (client address, identity or None, tier, pending auth). Raises
        :class:`Refused` with the close code and reason to send.
        """
        ip = handshake.client_host
        limit = self.settings.max_connections_per_ip
        if self.ip_connections[ip] >= limit:
            self._limit_hit("ip", ip)
            raise Refused(
                CloseCode.CONNECTION_LIMIT,
                f"connection limit: at most {limit} connections per client address",
                "limit_exceeded",
            )
        token = self.token_from(handshake)
        if token is None:
            if self.settings.require_auth:
                return ip, None, self.policy.tiers[self.policy.default_tier], True
            if user_id is not None:
                self.check_ban(user_id)
                self.check_user_limit(user_id)
            return ip, None, self.policy.tiers[self.policy.default_tier], False
        try:
            identity, tier = self.identify(token)
        except AuthError as exc:
            self.auth_failed(ip, exc)
            raise Refused(exc.close_code, exc.reason, "unauthorized") from None
        if user_id is not None and user_id != identity.user_id:
            mismatch = AuthError("user_id query parameter does not match the token")
            self.auth_failed(ip, mismatch)
            raise Refused(mismatch.close_code, mismatch.reason, "unauthorized")
        self.check_ban(identity.user_id)
        self.check_user_limit(identity.user_id)
        return ip, identity, tier, False

    def check_user_limit(self, user_id: str, conn_id: str | None = None) -> None:
        limit = self.settings.max_connections_per_user
        ids = self.user_connections.get(user_id, ())
        held = len(ids) - (1 if conn_id is not None and conn_id in ids else 0)
        if held >= limit:
            self._limit_hit("user", user_id)
            raise Refused(
                CloseCode.CONNECTION_LIMIT,
                f"connection limit: at most {limit} connections per user",
                "limit_exceeded",
            )

    def check_ban(self, user_id: str) -> None:
        """Raises :class:`Refused` (4506, ``banned``) while an administrator bans the user."""
        why = self.banned(user_id) if self.banned is not None else None
        if why is not None:
            self.stats.errors_by_code["banned"] += 1
            log.info("refused connection: user %s is banned", user_id)
            raise Refused(CloseCode.DISCONNECTED_BY_ADMIN, why, "banned")

    def _limit_hit(self, kind: str, who: str) -> None:
        self.stats.errors_by_code["connection_limit"] += 1
        log.info("refused connection: %s %s is at its connection limit", kind, who)

    def auth_failed(self, ip: str, exc: AuthError) -> None:
        self.stats.errors_by_code["unauthorized"] += 1
        log.info("authentication failed from %s: %s", ip, exc.reason)

    def opened(self, ip: str) -> None:
        self.ip_connections[ip] += 1

    def closed(self, ip: str) -> None:
        n = self.ip_connections[ip] - 1
        if n > 0:
            self.ip_connections[ip] = n
        else:
            del self.ip_connections[ip]


__all__ = ["Admission", "Handshake", "Refused"]
