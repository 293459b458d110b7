"""Pure policy: tiers (core.permissions), the token bucket (core.limits), token checks (auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from football_realtime.auth import AuthError, TokenVerifier
from football_realtime.config import DEFAULT_TIERS, Settings
from football_realtime.core.close_codes import CloseCode
from football_realtime.core.events import STREAM_EVENT_TYPES, EventType, SubscriptionType
from football_realtime.core.limits import TokenBucket
from football_realtime.core.permissions import Forbidden, TierPolicy

from ..support import JWT_SECRET, token

ET = EventType
PREDICTIONS = frozenset(STREAM_EVENT_TYPES[SubscriptionType.PREDICTIONS])


@pytest.fixture
def policy() -> TierPolicy:
    return TierPolicy.from_config(DEFAULT_TIERS)


def test_default_policy_is_the_seeds(policy: TierPolicy) -> None:
    free = policy.tiers["free"]
    assert free.event_types == {ET.PREDICTION_CREATED, ET.MATCH_STARTED}
    assert free.hidden_fields[ET.PREDICTION_CREATED] == {"expected_value", "strategy"}
    assert not free.unrestricted
    assert policy.tiers["premium"].unrestricted
    assert policy.default_tier == "free"


def test_narrow_stream_and_refuse_explicit(policy: TierPolicy) -> None:
    free, premium = policy.tiers["free"], policy.tiers["premium"]
    assert policy.narrow(free, PREDICTIONS, explicit=False) == {ET.PREDICTION_CREATED}
    assert policy.narrow(premium, PREDICTIONS, explicit=True) == PREDICTIONS
    with pytest.raises(Forbidden, match="prediction_updated"):
        policy.narrow(free, frozenset({ET.PREDICTION_CREATED, ET.PREDICTION_UPDATED}), True)
    odds = frozenset(STREAM_EVENT_TYPES[SubscriptionType.ODDS])
    with pytest.raises(Forbidden, match="odds_significant_change, odds_updated"):
        policy.narrow(free, odds, explicit=False)


def test_render_hides_fields_and_forbidden_types(policy: TierPolicy) -> None:
    free, premium = policy.tiers["free"], policy.tiers["premium"]
    env = {
        "event_type": "prediction_created",
        "data": {"match_id": 1, "confidence": 0.7, "expected_value": 0.1, "strategy": "x"},
        "stream": "predictions",
        "offset": 3,
    }
    payload = orjson.dumps(env)
    out = policy.render(free, ET.PREDICTION_CREATED, payload)
    assert out is not None
    assert orjson.loads(out) == {**env, "data": {"match_id": 1, "confidence": 0.7}}
    assert policy.render(premium, ET.PREDICTION_CREATED, payload) is payload
    assert policy.render(free, ET.ODDS_UPDATED, b"{}") is None
    plain = orjson.dumps({"event_type": "match_started", "data": {"match_id": 1}})
    assert policy.render(free, ET.MATCH_STARTED, plain) is plain  # nothing to hide


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"free": {"event_types": ["nope"]}}, "unknown event type 'nope'"),
        ({"free": {"event_types": ["connection_status"]}}, "not a published event type"),
        ({"free": {"colour": "red"}}, "unknown key"),
        ({"free": {"hidden_fields": {"odds": "home_odds"}}}, "must be a list"),
        ({"premium": {}}, "default tier 'free'"),
    ],
)
def test_bad_tier_config_is_refused(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TierPolicy.from_config(config)


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.violations == 1
    assert not b.take(0.1)
    assert b.violations == 2
    assert b.take(0.6)  # 0.6 s at 2/s refilled one token
    assert b.violations == 0
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


# -- tokens (catalogue S5, S6) ---------------------------------------------------


def _verifier(**kw: object) -> TokenVerifier:
    return TokenVerifier(Settings(**{"jwt_secret": JWT_SECRET, "jwt_leeway": 30, **kw}))


def _b64(obj: object) -> str:
    raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_valid_token_identity() -> None:
    ident = _verifier().verify(token("u7", "premium", roles=["admin"]))
    assert (ident.user_id, ident.tier, ident.roles) == ("u7", "premium", {"admin"})
    sub_only = jwt.encode({"sub": "u8", "exp": time.time() + 60}, JWT_SECRET, "HS256")
    assert _verifier().verify(sub_only).user_id == "u8"


def _reason(verifier: TokenVerifier, tok: str) -> tuple[str, int]:
    with pytest.raises(AuthError) as info:
        verifier.verify(tok)
    return info.value.reason, int(info.value.close_code)


def test_s5_alg_none_and_empty_signature_refused() -> None:
    body = {"user_id": "u", "tier": "premium", "exp": int(time.time()) + 60}
    none_tok = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(body) + "."
    assert _reason(_verifier(), none_tok) == (
        "token algorithm 'none' is not accepted (accepted: HS256)",
        CloseCode.UNAUTHORIZED,
    )
    stripped = token().rsplit(".", 1)[0] + "."
    assert _reason(_verifier(), stripped)[0] == "invalid token signature"


def _rsa_pem() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def test_s5_rs256_and_hs_rs_confusion() -> None:
    key, pem = _rsa_pem()
    v = TokenVerifier(Settings(jwt_public_key=pem))
    assert v.algorithms == ["RS256"]
    body = {"user_id": "u", "exp": int(time.time()) + 60}
    assert v.verify(jwt.encode(body, key, algorithm="RS256")).user_id == "u"
    # HS256 "signed" with the public PEM as the HMAC secret (CVE-2022-29217 class).
    head = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(body)
    sig = hmac.new(pem.encode(), head.encode(), hashlib.sha256).digest()
    forged = head + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    assert _reason(v, forged)[0] == "token algorithm 'HS256' is not accepted (accepted: RS256)"
    # An ES256 token where the key is RSA: the header's alg never picks the algorithm.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert "not accepted" in _reason(v, jwt.encode(body, ec_key, algorithm="ES256"))[0]


def test_es256_public_key_from_file(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "pub.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    v = TokenVerifier(Settings(jwt_public_key=str(path)))
    assert v.algorithms == ["ES256"]
    tok = jwt.encode({"sub": "e", "exp": int(time.time()) + 60}, key, algorithm="ES256")
    assert v.verify(tok).user_id == "e"


def test_s6_claims() -> None:
    now = int(time.time())
    v = _verifier(jwt_audience="football", jwt_issuer="issuer")
    ok = {"user_id": "u", "aud": "football", "iss": "issuer"}

    def enc(**claims: object) -> str:
        return jwt.encode({**ok, **claims}, JWT_SECRET, algorithm="HS256")

    assert _reason(v, enc()) == ("token is missing the exp claim", CloseCode.UNAUTHORIZED)
    assert _reason(v, enc(exp=now - 120)) == ("token expired", CloseCode.TOKEN_EXPIRED)
    assert v.verify(enc(exp=now - 20)).user_id == "u"  # within the 30 s leeway
    assert _reason(v, enc(exp=now + 60, nbf=now + 120))[0].startswith("token is not yet valid")
    assert _reason(v, enc(exp=now + 60, aud="other"))[0] == "token audience is not accepted"
    assert _reason(v, enc(exp=now + 60, iss="__issuer__"))[0] == "token issuer is not accepted"
    assert _reason(v, enc(exp=now + 60, user_id=None))[0] == (
        "token is missing the user_id (or sub) claim"
    )
    wrong_key = jwt.encode({**ok, "exp": now + 60}, "x" * 40, algorithm="HS256")
    assert _reason(v, wrong_key)[0] == "invalid token signature"
    assert _reason(v, "not-a-token")[0] == "malformed token"
    # Without a configured audience, a token's aud is not checked.
    assert _verifier().verify(enc(exp=now + 60)).user_id == "u"


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Settings(jwt_secret="short")
    with pytest.raises(ValueError, match="RS256 needs REALTIME_JWT_PUBLIC_KEY"):
        TokenVerifier(Settings(jwt_secret=JWT_SECRET, jwt_algorithms="HS256,RS256"))
    with pytest.raises(ValueError, match="unsupported algorithm 'none'"):
        TokenVerifier(Settings(jwt_secret=JWT_SECRET, jwt_algorithms="none"))
