"""FCM HTTP v1 client: message mapping, the send call, and every answer mapped to a PushResult.

``POST {endpoint}/v1/projects/{project}/messages:send`` with an OAuth2 access token from the
service account (:mod:`notifier.providers.oauth`). Errors are read in the Admin SDK's order:
``FcmError.errorCode``, then ``error.status``, then the HTTP status (PROTOCOLS.md 1.4-1.5).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from notifier.logging import get_logger
from notifier.models import Notification, Platform, Priority, token_hint
from notifier.providers.base import PushOutcome, PushResult
from notifier.providers.http2 import (
    HttpTransport,
    ResponseCounter,
    TransportConfig,
    TransportFailure,
    parse_retry_after,
)
from notifier.providers.oauth import AccessTokenSource, ServiceAccount, TokenFetchError
from notifier.providers.spec import fcm_data, fcm_notification

CONFIG_ERROR = "config_error"
QUOTA_DEFAULT_RETRY_SECONDS = 60.0
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_TOKEN_DEAD_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRY_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "UNSPECIFIED_ERROR"})
_CONFIG_CODES = frozenset({"THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"})
_KNOWN_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "QUOTA_EXCEEDED",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        *_TOKEN_DEAD_CODES,
        *_RETRY_CODES,
        *_CONFIG_CODES,
    }
)

log = get_logger(__name__)


def build_fcm_message(notification: Notification) -> dict[str, Any]:
    """The v1 ``message`` object for one notification (docs/design.md section 4)."""
    n = notification
    data = fcm_data(n, n.id)
    android: dict[str, Any] = {"priority": "HIGH" if n.priority is Priority.HIGH else "NORMAL"}
    if n.ttl_seconds is not None:
        android["ttl"] = f"{n.ttl_seconds}s"
    if n.collapse_key:
        android["collapse_key"] = n.collapse_key
    message: dict[str, Any] = {"token": n.target.token, "data": data, "android": android}
    shown = fcm_notification(n)
    if shown is not None:
        message["notification"] = shown
        # a duplicate copy replaces the first in the drawer instead of showing twice
        android["notification"] = {"tag": n.id}
    return message


@dataclass(frozen=True, slots=True)
class FcmAnswer:
    """The parts of an FCM error body that decide the outcome."""

    http_status: int
    status: str | None = None  # error.status (google.rpc code)
    error_code: str | None = None  # FcmError.errorCode
    field_violations: bool = False  # google.rpc.BadRequest with fieldViolations
    message: str = ""

    @property
    def code(self) -> str:
        return self.error_code or self.status or f"HTTP_{self.http_status}"

    @property
    def is_oauth_rejection(self) -> bool:
        """401 without an FcmError detail: our access token is missing or expired."""
        return self.http_status == 401 and self.error_code is None


def parse_fcm_error(http_status: int, body: bytes) -> FcmAnswer:
    """Read an error body; garbage yields an answer with only the HTTP status."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return FcmAnswer(http_status)
    error_code = None
    violations = False
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == _FCM_ERROR_TYPE and isinstance(detail.get("errorCode"), str):
            error_code = detail["errorCode"]
        elif detail.get("@type") == _BAD_REQUEST_TYPE and detail.get("fieldViolations"):
            violations = True
    status = error.get("status")
    message = error.get("message")
    return FcmAnswer(
        http_status,
        status=status if isinstance(status, str) else None,
        error_code=error_code,
        field_violations=violations,
        message=message[:300] if isinstance(message, str) else "",
    )


def map_fcm_response(http_status: int, body: bytes, retry_after: float | None = None) -> PushResult:
    """One FCM answer as a :class:`PushResult` (PROTOCOLS.md 1.5)."""
    if 200 <= http_status < 300:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        name = doc.get("name") if isinstance(doc, dict) else None
        return PushResult(
            PushOutcome.SENT, http_status, message_id=name if isinstance(name, str) else None
        )
    return map_fcm_error(parse_fcm_error(http_status, body), retry_after)


def map_fcm_error(answer: FcmAnswer, retry_after: float | None = None) -> PushResult:
    code, status = answer.code, answer.http_status

    def result(outcome: PushOutcome, code: str = code, after: float | None = None) -> PushResult:
        text = answer.message or f"FCM answered {status} {answer.code}"
        if code == CONFIG_ERROR:
            text = f"{answer.code}: {text}"
        return PushResult(outcome, status, retry_after_seconds=after, code=code, message=text)

    if code in _TOKEN_DEAD_CODES:
        return result(PushOutcome.TOKEN_DEAD)
    if code == "INVALID_ARGUMENT" or status == 400:
        token_level = answer.error_code == "INVALID_ARGUMENT" and not answer.field_violations
        return result(PushOutcome.TOKEN_DEAD if token_level else PushOutcome.PERMANENT)
    if code == "QUOTA_EXCEEDED" or status == 429:
        after = QUOTA_DEFAULT_RETRY_SECONDS if retry_after is None else retry_after
        return result(PushOutcome.RETRY, after=after)
    if code in _RETRY_CODES or status >= 500:
        return result(PushOutcome.RETRY, after=retry_after)
    if code in _CONFIG_CODES or status in (401, 403) or (status == 404 and not answer.error_code):
        # our credentials or project are wrong: alert and retry later, never touch the token
        return result(PushOutcome.RETRY, code=CONFIG_ERROR, after=retry_after)
    return result(PushOutcome.PERMANENT)


class FcmProvider:
    """FCM HTTP v1 sender; safe for many concurrent ``send`` calls."""

    platform = Platform.FCM

    def __init__(
        self,
        account: ServiceAccount,
        *,
        endpoint: str,
        transport: TransportConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = f"{endpoint.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self._http = HttpTransport(transport)
        self._auth = AccessTokenSource(account, self._http, clock=clock)

    @classmethod
    def from_files(
        cls, credentials: Path, *, endpoint: str, transport: TransportConfig
    ) -> FcmProvider:
        return cls(ServiceAccount.from_file(credentials), endpoint=endpoint, transport=transport)

    async def send(self, notification: Notification) -> PushResult:
        body = orjson.dumps({"message": build_fcm_message(notification)})
        token = notification.target.token
        for attempt in (1, 2):
            try:
                access_token = await self._auth.token()
            except TokenFetchError as exc:
                return _recorded(PushResult(PushOutcome.RETRY, code=exc.kind, message=exc.detail))
            try:
                response = await self._http.post(
                    self._url,
                    {"authorization": f"Bearer {access_token}", "content-type": "application/json"},
                    body,
                    want_headers=("retry-after",),
                )
            except TransportFailure as exc:
                detail = exc.detail.replace(token, token_hint(token))
                return _recorded(PushResult(PushOutcome.RETRY, code=exc.kind, message=detail))
            if 200 <= response.status < 300:
                return _recorded(map_fcm_response(response.status, response.body))
            answer = parse_fcm_error(response.status, response.body)
            if answer.is_oauth_rejection and attempt == 1:
                _recorded(PushResult(PushOutcome.RETRY, response.status, code=answer.code))
                self._auth.invalidate(access_token)
                continue
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            result = _redacted(map_fcm_error(answer, retry_after), token)
            if result.code == CONFIG_ERROR:
                log.warning("fcm_config_error", status=response.status, reason=answer.code)
            return _recorded(result, answer.code)
        raise AssertionError("unreachable: the loop returns on its second pass")

    async def close(self) -> None:
        await self._auth.close()
        await self._http.close()


def _redacted(result: PushResult, token: str) -> PushResult:
    """Never echo a device token from the provider's text into our records."""
    if result.message and token and token in result.message:
        return replace(result, message=result.message.replace(token, token_hint(token)))
    return result


_responses = ResponseCounter(Platform.FCM.value, _KNOWN_CODES)
_recorded = _responses.record
