"""Checking credentials like Apple and Google do: APNs provider JWTs and OAuth2 assertions.

Both verifiers use only PUBLIC keys. A JWT string is verified once and the result cached
(a client reuses its token for many requests), so the crypto never dominates a load test;
the time-dependent part (APNs ``iat`` age) is re-checked on every request.
"""

from __future__ import annotations

from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

APNS_TOKEN_MAX_AGE = 3600  # seconds: an older iat is ExpiredProviderToken
CLOCK_SKEW = 60  # seconds of tolerance for an iat in the future
ASSERTION_MAX_LIFETIME = 3600
FCM_SCOPES = (
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
)
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # google-auth's fixed audience
_CACHE_LIMIT = 10_000


class ProviderTokenVerifier:
    """Verifies ``authorization: bearer <ES256 JWT>`` of APNs requests."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey, key_id: str, team_id: str) -> None:
        self._key = public_key
        self._key_id = key_id
        self._team_id = team_id
        self._cache: dict[str, tuple[str | None, int]] = {}

    def check(self, authorization: str | None, now: float) -> str | None:
        """``None`` when the request is authorized, else the APNs reason."""
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "InvalidProviderToken"
        cached = self._cache.get(token)
        if cached is None:
            cached = self._verify(token, now)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = cached
        reason, iat = cached
        if reason is not None:
            return reason
        if now - iat > APNS_TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        return None

    def _verify(self, token: str, now: float) -> tuple[str | None, int]:
        invalid = ("InvalidProviderToken", 0)
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self._key_id:
                return invalid
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["ES256"],
                issuer=self._team_id,
                options={"require": ["iss", "iat"], "verify_iat": False, "verify_exp": False},
            )
        except jwt.PyJWTError:
            return invalid
        iat = claims.get("iat")
        if not isinstance(iat, int) or iat > now + CLOCK_SKEW:
            return invalid
        return None, iat


class GrantRefused(Exception):
    """An OAuth2 token request is refused; ``error`` is the OAuth2 error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class AssertionVerifier:
    """Verifies the RS256 JWT of an OAuth2 JWT-bearer grant (service-account flow)."""

    def __init__(
        self, public_key: rsa.RSAPublicKey, client_email: str, key_id: str, token_uri: str
    ) -> None:
        self._key = public_key
        self._email = client_email
        self._key_id = key_id
        self._token_uri = token_uri
        self._cache: dict[str, dict[str, Any]] = {}

    def verify(self, assertion: str, now: float) -> None:
        """Raise :class:`GrantRefused` unless the assertion would get a token now."""
        claims = self._cache.get(assertion)
        if claims is None:
            claims = self._decode(assertion)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[assertion] = claims
        iat, exp = claims["iat"], claims["exp"]
        if not (iat - CLOCK_SKEW <= now < exp) or exp - iat > ASSERTION_MAX_LIFETIME:
            raise GrantRefused(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        scopes = str(claims.get("scope", "")).split()
        if not any(scope in FCM_SCOPES for scope in scopes):
            raise GrantRefused("invalid_scope", "No valid scope for Firebase messaging.")

    def _decode(self, assertion: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise GrantRefused("invalid_grant", "Invalid JWT: malformed.") from exc
        if header.get("alg") != "RS256":
            raise GrantRefused("invalid_grant", "Invalid JWT: algorithm must be RS256.")
        if header.get("kid") != self._key_id:
            raise GrantRefused("invalid_grant", "Invalid JWT Signature: unknown key id.")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                self._key,
                algorithms=["RS256"],
                audience=[self._token_uri, GOOGLE_TOKEN_URI],
                issuer=self._email,
                options={
                    "require": ["iss", "aud", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise GrantRefused("invalid_grant", "Invalid JWT Signature.") from exc
        except jwt.InvalidAudienceError as exc:
            raise GrantRefused("invalid_grant", "Invalid JWT: bad audience.") from exc
        except jwt.InvalidIssuerError as exc:
            raise GrantRefused("invalid_grant", "Invalid grant: account not found") from exc
        except jwt.PyJWTError as exc:
            raise GrantRefused("invalid_grant", "Invalid JWT: bad claims.") from exc
        if not isinstance(claims["iat"], int | float) or not isinstance(claims["exp"], int | float):
            raise GrantRefused("invalid_grant", "Invalid JWT: bad claims.")
        return claims
