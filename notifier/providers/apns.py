"""APNs provider API client over HTTP/2: request headers and payload, the provider JWT, and
every status/reason mapped to a PushResult (PROTOCOLS.md section 2).

``POST {endpoint}/3/device/{token}`` with token auth. The ES256 JWT is minted with PyJWT and
shared by every request until it is ~40 minutes old (Apple: not more often than every 20,
never older than 60); a 403 ``ExpiredProviderToken`` re-mints it once and the request is
retried once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from notifier.logging import get_logger
from notifier.metrics import AUTH_TOKEN_REFRESHES
from notifier.models import Notification, Platform, Priority, token_hint
from notifier.providers.base import PushOutcome, PushResult
from notifier.providers.http2 import (
    HttpTransport,
    ResponseCounter,
    TransportConfig,
    TransportFailure,
    parse_retry_after,
)
from notifier.providers.spec import APNS, apns_payload

MAX_PAYLOAD_BYTES = APNS.payload_limit
JWT_ROTATE_SECONDS = 40 * 60
CONFIG_ERROR = "config_error"

_TOKEN_DEAD = frozenset(
    {"BadDeviceToken", "Unregistered", "ExpiredToken", "DeviceTokenNotForTopic"}
)
_RETRY = frozenset(
    {
        "TooManyRequests",
        "ServiceUnavailable",
        "InternalServerError",
        "Shutdown",
        "IdleTimeout",
        "UnrelatedKeyIdInToken",
    }
)
# our credentials are wrong or stale: a fresh JWT may help once, then alert and retry later
_AUTH = frozenset(
    {
        "ExpiredProviderToken",
        "InvalidProviderToken",
        "MissingProviderToken",
        "TooManyProviderTokenUpdates",
        "BadCertificate",
        "BadCertificateEnvironment",
        "BadEnvironmentKeyIdInToken",
    }
)
_REMINT = frozenset({"ExpiredProviderToken", "InvalidProviderToken", "BadCertificate"})
_PERMANENT = frozenset(
    {
        "BadCollapseId",
        "BadExpirationDate",
        "BadMessageId",
        "BadPriority",
        "BadTopic",
        "DuplicateHeaders",
        "InvalidPushType",
        "MissingDeviceToken",
        "MissingTopic",
        "PayloadEmpty",
        "TopicDisallowed",
        "Forbidden",
        "BadPath",
        "MethodNotAllowed",
        "PayloadTooLarge",
    }
)
_KNOWN = _TOKEN_DEAD | _RETRY | _AUTH | _PERMANENT

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ApnsRequest:
    """One push, ready to send but for the ``authorization`` header."""

    path: str
    headers: dict[str, str]
    body: bytes


def build_apns_request(notification: Notification, topic: str) -> ApnsRequest:
    """Path, headers and JSON body for one notification (docs/design.md section 4)."""
    n = notification
    background = n.is_data_only
    high = n.priority is Priority.HIGH and not background
    headers = {
        "apns-topic": topic,
        "apns-push-type": "background" if background else "alert",
        "apns-priority": "10" if high else "5",
        "apns-id": n.id,
        # a duplicate copy replaces the first on the device (PROTOCOLS.md 4.5)
        "apns-collapse-id": n.collapse_key or n.id,
    }
    if n.ttl_seconds is not None:
        expires = 0 if n.ttl_seconds == 0 else int(n.created_at.timestamp()) + n.ttl_seconds
        headers["apns-expiration"] = str(expires)
    token = n.target.token
    safe = token.isascii() and token.isalnum()  # hex tokens, the norm, need no quoting
    path = "/3/device/" + (token if safe else quote(token, safe=""))
    return ApnsRequest(path, headers, orjson.dumps(apns_payload(n)))


def check_apns_request(request: ApnsRequest) -> PushResult | None:
    """A PERMANENT result for what APNs would refuse anyway, without spending a request."""
    if len(request.body) > MAX_PAYLOAD_BYTES:
        text = f"payload is {len(request.body)} bytes, APNs allows {MAX_PAYLOAD_BYTES}"
        return PushResult(PushOutcome.PERMANENT, code="PayloadTooLarge", message=text)
    if not APNS.collapse_ok(request.headers["apns-collapse-id"]):
        text = f"collapse id refused: {APNS.collapse_rule}"
        return PushResult(PushOutcome.PERMANENT, code="BadCollapseId", message=text)
    return None


def map_apns_response(
    status: int, body: bytes, *, apns_id: str | None = None, retry_after: float | None = None
) -> PushResult:
    """One APNs answer as a :class:`PushResult` (PROTOCOLS.md 2.5)."""
    if status == 200:
        return PushResult(PushOutcome.SENT, status, message_id=apns_id)
    reason, timestamp = parse_apns_error(body)
    code = reason or f"HTTP_{status}"
    text = f"APNs answered {status} {code}"
    if reason in _TOKEN_DEAD or status == 410:
        since = _from_millis(timestamp) if status == 410 else None
        return PushResult(
            PushOutcome.TOKEN_DEAD, status, code=code, message=text, token_invalid_since=since
        )
    if reason in _AUTH:
        return PushResult(
            PushOutcome.RETRY,
            status,
            retry_after_seconds=retry_after,
            code=CONFIG_ERROR,
            message=f"{code}: {text}",
        )
    if reason in _RETRY or status >= 500 or status == 429:
        return PushResult(
            PushOutcome.RETRY, status, retry_after_seconds=retry_after, code=code, message=text
        )
    return PushResult(PushOutcome.PERMANENT, status, code=code, message=text)


def parse_apns_error(body: bytes) -> tuple[str | None, int | None]:
    """``reason`` and ``timestamp`` (ms) of an error body; Nones for garbage."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    reason, timestamp = doc.get("reason"), doc.get("timestamp")
    return (
        reason[:64] if isinstance(reason, str) else None,
        timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else None,
    )


def _from_millis(value: int | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class ProviderToken:
    """The shared provider JWT: reused until ``rotate_seconds`` old, re-minted once on rejection."""

    def __init__(
        self,
        key_pem: bytes,
        *,
        key_id: str,
        team_id: str,
        clock: Callable[[], float] = time.time,
        rotate_seconds: float = JWT_ROTATE_SECONDS,
    ) -> None:
        if not 20 * 60 <= rotate_seconds <= 60 * 60:
            raise ValueError("APNs JWT rotation must be between 20 and 60 minutes")
        try:
            key = ECAlgorithm(ECAlgorithm.SHA256).prepare_key(key_pem)
        except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
            raise ValueError("APNs key file is not an EC P-256 PEM (.p8) key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("APNs key file holds a public key, not the private .p8 key")
        self._key = key
        self._key_id, self._team_id = key_id, team_id
        self._clock, self._rotate_seconds = clock, rotate_seconds
        self._token: str | None = None
        self._issued_at = 0.0

    def current(self) -> str:
        """The cached JWT, minted anew when none exists or it reached its rotation age."""
        if self._token is None or self._clock() - self._issued_at >= self._rotate_seconds:
            self._mint()
        assert self._token is not None
        return self._token

    def renew(self, rejected: str) -> str:
        """After APNs rejected ``rejected``: mint once (concurrent rejections share it)."""
        if self._token == rejected:
            self._mint()
        return self.current()

    def _mint(self) -> None:
        now = self._clock()
        claims = {"iss": self._team_id, "iat": int(now)}
        self._token = jwt.encode(
            claims, self._key, algorithm="ES256", headers={"kid": self._key_id}
        )
        self._issued_at = now
        AUTH_TOKEN_REFRESHES.labels(provider=Platform.APNS.value).inc()


class ApnsProvider:
    """APNs sender over one multiplexed HTTP/2 connection; safe for concurrent ``send``."""

    platform = Platform.APNS

    def __init__(
        self,
        token: ProviderToken,
        *,
        topic: str,
        endpoint: str,
        transport: TransportConfig,
    ) -> None:
        self._jwt = token
        self._topic = topic
        self._endpoint = endpoint.rstrip("/")
        self._http = HttpTransport(replace(transport, http2_only=True))

    @classmethod
    def from_files(
        cls,
        key_file: Path,
        *,
        key_id: str,
        team_id: str,
        topic: str,
        endpoint: str,
        transport: TransportConfig,
    ) -> ApnsProvider:
        token = ProviderToken(key_file.read_bytes(), key_id=key_id, team_id=team_id)
        return cls(token, topic=topic, endpoint=endpoint, transport=transport)

    async def send(self, notification: Notification) -> PushResult:
        request = build_apns_request(notification, notification.apns_topic or self._topic)
        refused = check_apns_request(request)
        if refused is not None:
            return _recorded(refused)
        bearer = self._jwt.current()
        result, reason = await self._post(request, bearer, notification.target.token)
        if reason in _REMINT:
            log.warning("apns_provider_token_rejected", reason=reason)
            bearer = self._jwt.renew(bearer)
            result, reason = await self._post(request, bearer, notification.target.token)
        if result.code == CONFIG_ERROR:
            log.warning("apns_config_error", status=result.provider_status, reason=reason)
        return result

    async def _post(
        self, request: ApnsRequest, bearer: str, token: str
    ) -> tuple[PushResult, str | None]:
        """One request; the result and the APNs reason (None on success or no answer)."""
        headers = {**request.headers, "authorization": f"bearer {bearer}"}
        try:
            response = await self._http.post(
                self._endpoint + request.path,
                headers,
                request.body,
                want_headers=("apns-id", "retry-after"),
            )
        except TransportFailure as exc:
            detail = exc.detail.replace(token, token_hint(token))
            return _recorded(PushResult(PushOutcome.RETRY, code=exc.kind, message=detail)), None
        apns_id = response.headers.get("apns-id") or request.headers["apns-id"]
        if response.status == 200:  # the hot path: skip error parsing
            return _recorded(PushResult(PushOutcome.SENT, 200, message_id=apns_id)), None
        result = map_apns_response(
            response.status,
            response.body,
            apns_id=apns_id,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
        reason = parse_apns_error(response.body)[0]
        return _recorded(result, reason), reason

    async def close(self) -> None:
        await self._http.close()


_responses = ResponseCounter(Platform.APNS.value, _KNOWN)
_recorded = _responses.record
