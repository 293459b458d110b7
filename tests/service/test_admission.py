"""Admission without sockets: a handshake as admission reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from football_realtime.auth import TokenVerifier
from football_realtime.core.close_codes import CloseCode
from football_realtime.core.permissions import TierPolicy
from football_realtime.service.admission import Admission, Refused
from football_realtime.stats import ServiceStats

from ..support import make_settings, token


@dataclass
class FakeHandshake:
    client_host: str = "10.0.0.1"
    headers: dict[str, list[str]] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def header_values(self, name: str) -> list[str]:
        return self.headers.get(name, [])

    def query_value(self, name: str) -> str | None:
        return self.query.get(name)


def admission(users: dict[str, set[str]] | None = None, **overrides: Any) -> Admission:
    s = make_settings(**overrides)
    policy = TierPolicy.from_config(s.tiers, s.default_tier)
    return Admission(s, ServiceStats(), TokenVerifier(s), policy, users or {})


def test_origin_is_checked_only_when_configured_and_only_for_browsers() -> None:
    open_ = admission()
    assert open_.check_origin(FakeHandshake(headers={"origin": ["https://evil"]})) is None
    strict = admission(allowed_origins=["https://app.example"])
    assert strict.check_origin(FakeHandshake()) is None  # not a browser
    ok = FakeHandshake(headers={"origin": ["https://app.example"]})
    assert strict.check_origin(ok) is None
    two = FakeHandshake(headers={"origin": ["https://app.example", "https://evil"]})
    assert strict.check_origin(two) == "origin not allowed"
    assert strict.stats.errors_by_code["forbidden_origin"] == 1


def test_the_query_token_wins_over_the_header() -> None:
    a = admission()
    hs = FakeHandshake(
        headers={"authorization": ["Bearer from-header"]}, query={"token": "from-query"}
    )
    assert a.token_from(hs) == "from-query"
    assert a.token_from(FakeHandshake(headers={"authorization": ["bearer  x.y.z "]})) == "x.y.z"
    assert a.token_from(FakeHandshake(headers={"authorization": ["Basic abc"]})) is None


def test_a_token_admits_its_user_with_its_tier() -> None:
    ip, identity, tier, pending = admission().admit(
        FakeHandshake(query={"token": token("u1", "free")}), None
    )
    assert (ip, pending, tier.name) == ("10.0.0.1", False, "free")
    assert identity is not None and identity.user_id == "u1"


def test_refusals_carry_their_close_code_and_error_code() -> None:
    a = admission()
    with pytest.raises(Refused) as exc:
        a.admit(FakeHandshake(query={"token": "not-a-token"}), None)
    assert (exc.value.code, exc.value.error_code) == (CloseCode.UNAUTHORIZED, "unauthorized")
    with pytest.raises(Refused) as exc:
        a.admit(FakeHandshake(query={"token": token("u1")}), "someone-else")
    assert "does not match" in exc.value.reason


def test_connection_limits_per_address_and_per_user() -> None:
    users = {"u1": {"c1", "c2"}}
    a = admission(users, max_connections_per_user=2, max_connections_per_ip=1)
    with pytest.raises(Refused) as exc:
        a.admit(FakeHandshake(query={"token": token("u1")}), None)
    assert exc.value.code == CloseCode.CONNECTION_LIMIT
    a.check_user_limit("u1", "c1")  # re-checking a connection already counted passes
    a.opened("10.0.0.1")
    with pytest.raises(Refused):
        a.admit(FakeHandshake(), None)
    a.closed("10.0.0.1")
    assert a.ip_connections == {}
    a.admit(FakeHandshake(), "u2")


def test_require_auth_without_a_token_waits_for_an_auth_message() -> None:
    _, identity, _, pending = admission(require_auth=True).admit(FakeHandshake(), None)
    assert identity is None and pending


def test_require_auth_needs_a_key() -> None:
    with pytest.raises(ValueError, match="REALTIME_REQUIRE_AUTH"):
        admission(require_auth=True, jwt_secret=None)
