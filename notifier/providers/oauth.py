"""OAuth2 access tokens for FCM from a Google service account (JWT-bearer grant).

The service-account JSON is read once at start. The assertion is an RS256 JWT signed by
PyJWT (no hand-rolled crypto) and exchanged at the JSON's own ``token_uri``. The access
token is cached until shortly before it expires; concurrent callers share one in-flight
fetch (1,000 sends that find no token make one request). Neither the key, the assertion
nor the access token ever reaches a log line or an exception text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from notifier.logging import get_logger
from notifier.metrics import AUTH_TOKEN_REFRESHES
from notifier.models import Platform
from notifier.providers.http2 import HttpTransport, TransportFailure

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME_SECONDS = 3600
_EARLY_REFRESH_SECONDS = 300  # google-auth refreshes 3 min 45 s early; we take 5 min
_GRACE_SECONDS = 30  # never use a cached token this close to its expiry

log = get_logger(__name__)


class CredentialsError(ValueError):
    """The service-account file is unusable; the text names the problem, never the key."""


class TokenFetchError(Exception):
    """No access token: ``kind`` is ``config_error`` (refused), ``UNAVAILABLE`` (5xx),
    ``timeout`` or ``connection``; it becomes the code of a RETRY result."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True, repr=False)
class ServiceAccount:
    """The fields of a service-account JSON that the grant needs (``repr`` hides the key)."""

    project_id: str
    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        try:
            info = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CredentialsError(f"{path}: not a readable JSON file") from exc
        if not isinstance(info, dict):
            raise CredentialsError(f"{path}: not a service-account JSON object")
        return cls.from_info(info, str(path))

    @classmethod
    def from_info(cls, info: dict[str, Any], origin: str = "service account") -> ServiceAccount:
        fields = ("project_id", "client_email", "private_key", "token_uri")
        missing = [f for f in fields if not isinstance(info.get(f), str) or not info[f]]
        if missing:
            raise CredentialsError(f"{origin}: missing {', '.join(missing)}")
        return cls(
            project_id=info["project_id"],
            client_email=info["client_email"],
            private_key=info["private_key"],
            private_key_id=str(info.get("private_key_id") or ""),
            token_uri=info["token_uri"],
        )

    def __repr__(self) -> str:
        return f"ServiceAccount(project_id={self.project_id!r}, client_email={self.client_email!r})"


class AccessTokenSource:
    """Process-wide cached OAuth2 access token with single-flight refresh."""

    def __init__(
        self,
        account: ServiceAccount,
        transport: HttpTransport,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._account = account
        self._transport = transport
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._inflight: asyncio.Task[str] | None = None
        try:  # parse once, so that a bad key fails at start rather than on the first send
            key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(account.private_key)
        except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
            raise CredentialsError("service account: private_key is not an RSA PEM key") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CredentialsError("service account: private_key is a public key")
        self._signing_key = key

    async def token(self) -> str:
        """A valid access token, fetched if none is cached or it is about to expire."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(self._clear_inflight)
        try:
            return await asyncio.shield(self._inflight)
        except TokenFetchError:
            # an early refresh failed: the cached token still works until it really expires
            if self._token is not None and self._clock() < self._expires_at - _GRACE_SECONDS:
                return self._token
            raise

    def invalidate(self, rejected: str) -> None:
        """Drop ``rejected`` if still cached (a 401 on it); later callers fetch a new one."""
        if self._token == rejected:
            self._token = None

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()

    def _clear_inflight(self, task: asyncio.Task[str]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # a failure is reported to every waiter; mark it retrieved

    def _assertion(self, now: int) -> str:
        claims = {
            "iss": self._account.client_email,
            "scope": FCM_SCOPE,
            "aud": self._account.token_uri,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME_SECONDS,
        }
        headers = {"kid": self._account.private_key_id} if self._account.private_key_id else None
        return jwt.encode(claims, self._signing_key, algorithm="RS256", headers=headers)

    async def _fetch(self) -> str:
        now = self._clock()
        # the assertion is stamped with the wall clock; ``clock`` only ages the cache
        form = urlencode(
            {"grant_type": _GRANT_TYPE, "assertion": self._assertion(int(time.time()))}
        )
        try:
            response = await self._transport.post(
                self._account.token_uri,
                {"content-type": "application/x-www-form-urlencoded"},
                form.encode(),
            )
        except TransportFailure as exc:
            log.warning("fcm_token_fetch_failed", kind=exc.kind, detail=exc.detail)
            raise TokenFetchError(exc.kind, exc.detail) from None
        token, expires_in = _parse_token_response(response.status, response.body)
        AUTH_TOKEN_REFRESHES.labels(provider=Platform.FCM.value).inc()
        margin = min(_EARLY_REFRESH_SECONDS, expires_in / 2)
        self._token = token
        self._refresh_at = now + expires_in - margin
        self._expires_at = now + expires_in
        log.info("fcm_token_fetched", expires_in=expires_in)
        return token


def _parse_token_response(status: int, body: bytes) -> tuple[str, float]:
    """The access token and its lifetime, or :class:`TokenFetchError` (text without secrets)."""
    try:
        answer = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    token = answer.get("access_token")
    if status == 200 and isinstance(token, str) and token:
        expires_in = answer.get("expires_in", 3600)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        return token, max(lifetime, 1.0)
    error = answer.get("error")
    code = error if isinstance(error, str) else f"HTTP {status}"
    detail = f"token endpoint answered {status} ({code[:60]})"
    log.warning("fcm_token_rejected", status=status, error=code[:60])
    kind = "UNAVAILABLE" if status >= 500 else "config_error"
    raise TokenFetchError(kind, detail)
