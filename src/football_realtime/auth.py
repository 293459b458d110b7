"""JWT verification (PyJWT): who a token names, its tier and roles, and when it expires.

Algorithms are pinned by configuration, never taken from the token: the header's
``alg`` only selects which configured key to try, and must be one the operator
allowed for that key. HMAC algorithms use ``REALTIME_JWT_SECRET``; RSA/EC/EdDSA
ones use ``REALTIME_JWT_PUBLIC_KEY``. So ``alg: none`` and HS/RS confusion (an
HS256 token "signed" with the public key) are refused.

Failures raise :class:`AuthError` with a specific reason (expired, bad signature,
missing claim...) that never contains the token.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from .config import Settings
from .core.close_codes import CloseCode
from .core.errors import LocalError

_HMAC = ("HS256", "HS384", "HS512")
_MAX_TOKEN_LEN = 8192
_NO_ROLES: frozenset[str] = frozenset()


class AuthError(LocalError):
    """The token is refused. ``reason`` is safe to show to the client and to log."""

    def __init__(self, reason: str, close_code: CloseCode = CloseCode.UNAUTHORIZED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    tier: str | None
    roles: frozenset[str]
    expires_at: float  # the token's ``exp`` (seconds since the epoch)


class TokenVerifier:
    """Verifies tokens against the configured keys. Build once per service."""

    def __init__(self, settings: Settings) -> None:
        self.leeway = settings.jwt_leeway
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self._options: dict[str, Any] = {
            "require": ["exp"],
            "verify_aud": self.audience is not None,
        }
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        public = _load_public_key(settings.jwt_public_key)
        algorithms = list(settings.jwt_algorithms) or _default_algorithms(secret, public)
        known = get_default_algorithms()
        #: alg -> key; only these algorithms are ever accepted.
        self.keys: dict[str, Any] = {}
        for alg in algorithms:
            if alg not in known or alg == "none":
                raise ValueError(f"REALTIME_JWT_ALGORITHMS: unsupported algorithm {alg!r}")
            if alg in _HMAC:
                if secret is None:
                    raise ValueError(f"REALTIME_JWT_ALGORITHMS: {alg} needs REALTIME_JWT_SECRET")
                self.keys[alg] = secret
            else:
                if public is None:
                    raise ValueError(
                        f"REALTIME_JWT_ALGORITHMS: {alg} needs REALTIME_JWT_PUBLIC_KEY"
                    )
                try:
                    self.keys[alg] = known[alg].prepare_key(public)
                except Exception as exc:
                    raise ValueError(
                        f"REALTIME_JWT_PUBLIC_KEY does not suit {alg}: {exc}"
                    ) from None

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @property
    def algorithms(self) -> list[str]:
        return sorted(self.keys)

    def verify(self, token: str) -> Identity:
        if not self.keys:
            raise AuthError("token authentication is not configured on this server")
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LEN:
            raise AuthError("malformed token")
        if len(self.keys) == 1:
            # One accepted algorithm: PyJWT checks the header's alg against it, so the
            # header need not be parsed twice (~15 µs per connection). A malformed token
            # or another alg takes the full path below, for the specific reason.
            ((only_alg, only_key),) = self.keys.items()
            try:
                return _identity(self._decode(token, only_alg, only_key))
            except (jwt.DecodeError, jwt.InvalidAlgorithmError):
                pass
            except jwt.PyJWTError as exc:
                raise _refusal(exc) from None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        key = self.keys.get(alg) if isinstance(alg, str) else None
        if key is None or not isinstance(alg, str):
            shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
            raise AuthError(
                f"token algorithm {shown!r} is not accepted (accepted: {', '.join(self.algorithms)})"
            )
        try:
            claims = self._decode(token, alg, key)
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from None
        return _identity(claims)

    def _decode(self, token: str, alg: str, key: Any) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            options=self._options,  # type: ignore[arg-type]
        )


def _refusal(exc: jwt.PyJWTError) -> AuthError:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError("token expired", CloseCode.TOKEN_EXPIRED)
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthError("invalid token signature")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError(f"token is missing the {exc.claim} claim")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthError("token audience is not accepted")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthError("token issuer is not accepted")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthError("token is not yet valid (nbf/iat in the future)")
    if isinstance(exc, jwt.InvalidKeyError):
        return AuthError("token does not match the configured key type")
    return AuthError(f"invalid token: {type(exc).__name__}")


def _identity(claims: dict[str, Any]) -> Identity:
    raw_user = claims.get("user_id", claims.get("sub"))
    if type(raw_user) is int:
        raw_user = str(raw_user)
    if type(raw_user) is not str or not 1 <= len(raw_user) <= 128 or not raw_user.isprintable():
        raise AuthError("token is missing the user_id (or sub) claim")
    tier = claims.get("tier")
    if tier is not None and (type(tier) is not str or not 1 <= len(tier) <= 64):
        raise AuthError("token tier claim must be a short string")
    roles = claims.get("roles", [])
    if type(roles) is str:
        roles = [roles]
    if type(roles) is not list or not all(type(r) is str for r in roles):
        raise AuthError("token roles claim must be a list of strings")
    exp = claims["exp"]
    if type(exp) not in (int, float):  # pragma: no cover - PyJWT already checks
        raise AuthError("token exp claim must be a number")
    # Shared empty role set and interned tier names: one Identity per connection.
    return Identity(
        raw_user,
        sys.intern(tier) if tier is not None else None,
        frozenset(roles) if roles else _NO_ROLES,
        float(exp),
    )


def _load_public_key(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if "-----BEGIN" in value:
        return value
    if os.path.isfile(value):
        with open(value, encoding="ascii") as fh:
            return fh.read()
    raise ValueError("REALTIME_JWT_PUBLIC_KEY is neither a PEM key nor a readable file")


def _default_algorithms(secret: str | None, public: str | None) -> list[str]:
    algs = ["HS256"] if secret is not None else []
    if public is not None:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(public.encode())
        if isinstance(key, rsa.RSAPublicKey):
            algs.append("RS256")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algs.append({256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, "ES256"))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            algs.append("EdDSA")
        else:
            raise ValueError("REALTIME_JWT_PUBLIC_KEY: unsupported key type")
    return algs


__all__ = ["AuthError", "Identity", "TokenVerifier"]
