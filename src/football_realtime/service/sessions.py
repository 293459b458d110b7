"""Sessions: the security state of each open connection (docs/security.md).

Once :mod:`.admission` has let a connection in, :class:`Sessions` keeps its
:class:`Session`: its tier, its token's expiry (a warning, then close 4502), its
message rate (``rate_limited``, then 1008), the first ``auth`` message when the
handshake carried no token, and token refreshes. Subscriptions go through
:meth:`Sessions.subscribe`, which narrows them to what the tier may receive; delivery
enforces the same policy through :mod:`.views`.

The pure policy lives in ``core.permissions`` and ``core.limits``; token checks in
``auth``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..auth import AuthError, Identity
from ..config import Settings
from ..core import protocol as proto
from ..core.close_codes import CloseCode
from ..core.encoding import server_message
from ..core.events import EventType, SubscriptionType
from ..core.limits import TokenBucket
from ..core.permissions import Forbidden, Tier
from ..core.protocol import ProtocolError
from ..core.subscriptions import Subscription, SubscriptionFilter, effective_event_types
from ..stats import ServiceStats
from ..timerwheel import TimerWheel
from .admission import Admission, Refused
from .connection import Connection
from .control import ClusterControl
from .hub import Hub

log = logging.getLogger("football_realtime.security")

#: Granularity of token expiry deadlines (seconds): a token is closed at most this late
#: (and at most twice this early, rather than one tick after it expired).
_EXPIRY_TICK = 0.05


class Session:
    """Security state of one connection (``Connection.session``)."""

    __slots__ = (
        "auth_timer",
        "bucket",
        "expiry_slot",
        "identity",
        "ip",
        "on_authenticated",
        "pending",
        "tier",
    )

    def __init__(
        self,
        ip: str,
        identity: Identity | None,
        tier: Tier,
        pending: bool,
        bucket: TokenBucket,
        on_authenticated: Callable[[proto.Auth], Awaitable[None]] | None = None,
    ) -> None:
        self.ip = ip
        self.identity = identity
        self.tier = tier
        #: Waiting for a first ``auth`` message (REALTIME_REQUIRE_AUTH, no token given):
        #: the connection is sent nothing but the reply to ``auth``.
        self.pending = pending
        self.bucket = bucket
        #: Called once (and awaited) when a pending connection authenticates, with the
        #: ``auth`` message (it may open a durable session).
        self.on_authenticated = on_authenticated
        self.auth_timer: asyncio.TimerHandle | None = None
        #: The token's next deadline (expiry warning, then expiry) on the guard's
        #: timer wheel; 0 when none.
        self.expiry_slot = 0

    def describe(self) -> dict[str, Any]:
        return {
            "authenticated": self.identity is not None,
            "tier": self.tier.name,
            "expires_at": _iso(self.identity.expires_at) if self.identity else None,
        }


class Sessions:
    """Every connection's :class:`Session` (one per service)."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        stats: ServiceStats,
        admission: Admission,
        control: ClusterControl,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``control``: the cluster-wide per-user connection count (and bans).
        ``clock``: monotonic seconds for the rate limit. Not the loop's clock:
        ``asyncio.get_running_loop()`` makes a ``getpid`` system call on every call
        (CPython 3.11), which cost an ack a quarter of its handling on a VM."""
        self.settings = settings
        self.hub = hub
        self.stats = stats
        self.admission = admission
        self.control = control
        self.clock = clock
        self.policy = admission.policy
        self._expiry: TimerWheel[Connection] | None = None

    # -- sessions ----------------------------------------------------------------

    def open(
        self,
        conn: Connection,
        ip: str,
        identity: Identity | None,
        tier: Tier,
        pending: bool,
        on_authenticated: Callable[[proto.Auth], Awaitable[None]] | None = None,
    ) -> Session:
        s = self.settings
        session = Session(
            ip,
            identity,
            tier,
            pending,
            TokenBucket(s.rate_limit_per_second, s.rate_limit_burst, self.clock()),
            on_authenticated,
        )
        conn.session = session
        self.hub.set_view(conn, None if tier.unrestricted else tier.name)
        self.admission.opened(ip)
        if pending:
            session.auth_timer = asyncio.get_running_loop().call_later(
                s.auth_timeout, self._auth_timeout, conn
            )
        elif identity is not None:
            self._schedule_expiry(conn, session)
        return session

    def close(self, conn: Connection) -> None:
        session: Session | None = conn.session
        if session is None:
            return
        if session.auth_timer is not None:
            session.auth_timer.cancel()
            session.auth_timer = None
        if session.expiry_slot and self._expiry is not None:
            self._expiry.remove(conn, session.expiry_slot)
            session.expiry_slot = 0
        session.on_authenticated = None
        self.admission.closed(session.ip)
        if conn.user_id is not None:
            self.control.release(conn.user_id, conn.id)

    async def reserve(self, user_id: str, conn_id: str) -> None:
        """Count a connection of ``user_id`` on every instance (after admission's check
        on this one). Raises :class:`Refused` at REALTIME_MAX_CONNECTIONS_PER_USER."""
        await self.control.reserve(user_id, conn_id, self.settings.max_connections_per_user)
        try:
            # A ban that arrived while we waited: no await from here until the connection
            # is in the hub, where a later one finds it.
            self.admission.check_ban(user_id)
        except Refused:
            self.control.release(user_id, conn_id)
            raise

    def admit_message(self, conn: Connection) -> bool:
        """Token-bucket rate limit: False when the message must be dropped (it was
        answered with ``rate_limited``, or the connection is being closed)."""
        session: Session | None = conn.session
        if session is None:
            return True
        bucket = session.bucket
        if bucket.take(self.clock()):
            return True
        self.stats.errors_by_code["rate_limited"] += 1
        if bucket.violations > self.settings.rate_limit_violations:
            if not conn.closing:
                log.info("closing flooding connection %s (ip %s)", conn.id, session.ip)
            conn.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return False
        s = self.settings
        self.hub.send_payload(
            conn,
            proto.error_reply(
                ProtocolError(
                    "rate_limited",
                    f"too many messages: at most {s.rate_limit_per_second:g} per second "
                    f"(bursts of {s.rate_limit_burst}); this one was dropped",
                )
            ),
        )
        return False

    def refuse_unauthenticated(self, conn: Connection, what: str) -> None:
        """A pending connection sent something other than a valid ``auth``."""
        self.stats.errors_by_code["unauthorized"] += 1
        conn.close(CloseCode.UNAUTHORIZED, f"authenticate first: {what}"[:120])

    async def handle_auth(self, conn: Connection, msg: proto.Auth) -> None:
        """``auth``: first authentication of a connection, or a token refresh."""
        session: Session | None = conn.session
        if session is None:  # pragma: no cover - every endpoint connection has one
            raise ProtocolError("internal_error", "no session", msg.id, msg.type)
        if (msg.session_id is not None or msg.resume) and not session.pending:
            raise ProtocolError(
                "invalid_message",
                "session_id and resume are taken only in the first auth of a connection "
                "that connected without a token (or in the handshake query)",
                msg.id,
                msg.type,
            )
        try:
            identity, tier = self.admission.identify(msg.token)
            current = session.identity.user_id if session.identity else conn.user_id
            if current is not None and current != identity.user_id:
                raise AuthError("the token names another user than this connection")
            if session.identity is None:
                self.admission.check_ban(identity.user_id)
                self.admission.check_user_limit(identity.user_id, conn.id)
                if conn.user_id != identity.user_id:
                    await self.reserve(identity.user_id, conn.id)
                    if conn.closing:
                        self.control.release(identity.user_id, conn.id)
                        return
        except (AuthError, Refused) as exc:
            if isinstance(exc, AuthError):
                self.admission.auth_failed(session.ip, exc)
                code, reason, error_code = exc.close_code, exc.reason, "unauthorized"
            else:
                code, reason, error_code = exc.code, exc.reason, exc.error_code
            self.hub.send_payload(
                conn, proto.error_reply(ProtocolError(error_code, reason, msg.id, msg.type))
            )
            if session.pending:
                conn.close(code, reason[:120])
            return

        first = session.pending
        session.pending = False
        if session.auth_timer is not None:
            session.auth_timer.cancel()
            session.auth_timer = None
        session.identity = identity
        self.hub.bind_user(conn, identity.user_id)
        removed: list[Any] = []
        if tier is not session.tier:
            session.tier = tier
            self.hub.set_view(conn, None if tier.unrestricted else tier.name)
            if tier.event_types is not None:
                removed, _ = self.hub.narrow_subscriptions(conn, tier.event_types)
        self._schedule_expiry(conn, session)
        result = {
            "user_id": identity.user_id,
            **session.describe(),
            "permissions": self.policy.describe(tier),
            "subscriptions": [s.describe() for s in conn.subscriptions.values()],
            "removed": [s.describe() for s in removed],
        }
        self.hub.send_payload(conn, proto.ack(msg.id, msg.type, result))
        if removed:
            self.hub.notify_user_subscriptions(conn, "unsubscribed", removed)
        if first and session.on_authenticated is not None:
            callback, session.on_authenticated = session.on_authenticated, None
            await callback(msg)

    def _auth_timeout(self, conn: Connection) -> None:
        session: Session | None = conn.session
        if session is not None and session.pending:
            session.auth_timer = None
            self.stats.errors_by_code["auth_timeout"] += 1
            conn.close(
                CloseCode.AUTH_TIMEOUT,
                f"no auth message within {self.settings.auth_timeout:g} s",
            )

    def _schedule_expiry(self, conn: Connection, session: Session) -> None:
        """Arm the token's next deadline: its expiry warning (at once if the token is
        already inside the warning window), then its expiry. Every token shares one
        timer wheel: two loop timers per connection cost ~1.2 KB."""
        identity = session.identity
        assert identity is not None
        wheel = self._expiry
        loop = asyncio.get_running_loop()
        if wheel is None or wheel.loop is not loop:  # first use, or the app runs again
            wheel = TimerWheel(loop, _EXPIRY_TICK, self._expiry_due)
            self._expiry = wheel
        warn_in = identity.expires_at - self.settings.token_expiry_warning - time.time()
        session.expiry_slot = wheel.add(
            conn, wheel.loop.time() + max(0.0, warn_in), session.expiry_slot
        )

    def _expiry_due(self, conn: Connection) -> None:
        session: Session | None = conn.session
        if session is None or session.identity is None:
            return
        session.expiry_slot = 0
        remaining = session.identity.expires_at - time.time()
        close_in = remaining + self.settings.jwt_leeway
        if close_in <= 2 * _EXPIRY_TICK:
            self._expired(conn)
            return
        if remaining <= self.settings.token_expiry_warning + 2 * _EXPIRY_TICK:
            self._warn_expiry(conn)
            next_in = close_in
        else:  # not yet in the warning window (the wall clock stepped back)
            next_in = remaining - self.settings.token_expiry_warning
        wheel = self._expiry
        assert wheel is not None
        session.expiry_slot = wheel.add(conn, wheel.loop.time() + next_in)

    def _warn_expiry(self, conn: Connection) -> None:
        session: Session | None = conn.session
        if session is None or session.identity is None:
            return
        exp = session.identity.expires_at
        self.hub.send_payload(
            conn,
            server_message(
                EventType.CONNECTION_STATUS,
                {
                    "status": "warning",
                    "reason": "token_expiring",
                    "message": "the token expires soon; send auth with a fresh token",
                    "expires_at": _iso(exp),
                    "seconds_left": max(0.0, round(exp - time.time(), 3)),
                },
            ),
        )

    def _expired(self, conn: Connection) -> None:
        self.stats.errors_by_code["token_expired"] += 1
        log.info("closing connection %s: token expired (user %s)", conn.id, conn.user_id)
        conn.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def subscribe(
        self,
        conn: Connection,
        subscription_type: SubscriptionType | None,
        flt: SubscriptionFilter,
        msg_id: Any,
    ) -> Subscription:
        """``Hub.subscribe`` within the connection's tier: explicit forbidden event types
        are refused (``forbidden``), a whole stream is narrowed to what the tier may
        receive (the ack shows the effective event types)."""
        event_types: frozenset[EventType] | None = None
        session: Session | None = conn.session
        if session is not None and session.tier.event_types is not None:
            try:
                requested = effective_event_types(subscription_type, flt)
            except ValueError as exc:
                raise ProtocolError("invalid_filter", str(exc), msg_id, "subscribe") from None
            try:
                event_types = self.policy.narrow(
                    session.tier, requested, explicit=flt.event_types is not None
                )
            except Forbidden as exc:
                raise ProtocolError("forbidden", str(exc), msg_id, "subscribe") from None
        return self.hub.subscribe(conn, subscription_type, flt, msg_id, event_types=event_types)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["Refused", "Session", "Sessions"]
