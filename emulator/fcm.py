"""The FCM stand-in: the OAuth2 token endpoint and ``messages:send``, strict like Google.

``POST /token`` takes the JWT-bearer grant of the service account (RS256 assertion:
``kid`` = private_key_id, ``iss`` = client_email, ``aud`` = token_uri, a firebase.messaging
or cloud-platform scope, iat/exp within an hour) and answers ``{access_token, expires_in,
token_type}``. ``POST /v1/projects/{project}/messages:send`` needs such a token (else 401
UNAUTHENTICATED without details) and a message per PROTOCOLS.md 1.3; errors use the
google.rpc shape with ``FcmError`` / ``BadRequest`` details (PROTOCOLS.md 1.4, 1.5, 6).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs

import orjson

from emulator.auth import AssertionVerifier, GrantRefused
from emulator.fcm_message import MessageError, check_message
from emulator.state import EmulatorState, Fault, FaultKind, now

Response = tuple[int, list[tuple[str, str]], bytes]
Headers = Any

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_JSON = ("content-type", "application/json; charset=UTF-8")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def rpc_error(
    code: int,
    message: str,
    *,
    error_code: str | None = None,
    violations: list[dict[str, str]] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """An error in the google.rpc shape, with an FcmError or BadRequest detail."""
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append({"@type": FCM_ERROR, "errorCode": error_code})
    if violations is not None:
        details.append({"@type": BAD_REQUEST, "fieldViolations": violations})
    status = _STATUS.get(code, "UNKNOWN")
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return code, [_JSON, *(headers or [])], orjson.dumps({"error": error})


def fault_response(fault: Fault) -> Response:
    """The answer FCM would give for a token in this state."""
    if fault.kind is FaultKind.DEAD:
        return rpc_error(404, "Requested entity was not found.", error_code="UNREGISTERED")
    if fault.kind is FaultKind.BAD:
        return rpc_error(
            400,
            "The registration token is not a valid FCM registration token",
            error_code="INVALID_ARGUMENT",
        )
    if fault.kind is FaultKind.ERROR:
        return rpc_error(fault.status, "Injected by the emulator.", error_code=fault.reason or None)
    if fault.kind is FaultKind.RATE_LIMITED:
        return rpc_error(
            429,
            "Quota exceeded for sending messages.",
            error_code="QUOTA_EXCEEDED",
            headers=[("retry-after", str(1 if fault.retry_after is None else fault.retry_after))],
        )
    headers = [] if fault.retry_after is None else [("retry-after", str(fault.retry_after))]
    return rpc_error(
        503, "The service is currently unavailable.", error_code="UNAVAILABLE", headers=headers
    )


def _oauth_error(error: str, description: str) -> Response:
    body = orjson.dumps({"error": error, "error_description": description})
    return 400, [_JSON], body


class FcmService:
    """Token endpoint and send endpoint for one service account and project."""

    def __init__(self, state: EmulatorState, verifier: AssertionVerifier, project: str) -> None:
        self._state = state
        self._verifier = verifier
        self._project = project
        self._send_path = f"/v1/projects/{project}/messages:send"

    def token(self, method: str, body: bytes) -> Response:
        """``POST /token``: the OAuth2 JWT-bearer grant."""
        if method != "POST":
            return 405, [_JSON], b'{"error":"invalid_request"}'
        try:
            form = parse_qs(body.decode(), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return _oauth_error("invalid_request", "Malformed form body.")
        if form.get("grant_type") != [GRANT_TYPE]:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion", [""])[0]
        try:
            self._verifier.verify(assertion, now())
        except GrantRefused as exc:
            return _oauth_error(exc.error, exc.description)
        if self._state.auth.reject_token > 0:
            self._state.auth.reject_token -= 1
            return _oauth_error("invalid_grant", "Invalid grant: rejected by the emulator.")
        access_token = "ya29.emu-" + secrets.token_urlsafe(32)
        lifetime = self._state.issue_access_token(access_token, now())
        answer = {"access_token": access_token, "expires_in": lifetime, "token_type": "Bearer"}
        return 200, [_JSON], orjson.dumps(answer)

    async def send(
        self, method: str, path: str, headers: Headers, body: bytes, client: str
    ) -> Response:
        """``POST /v1/projects/{project}/messages:send``."""
        state = self._state
        response, checked = self._validate(method, path, headers, body)
        if response is not None or checked is None:
            state.reject("fcm")
            return response or rpc_error(400, "Invalid message.")
        message, validate_only = checked
        state.seen_connection("fcm", client)
        target = message.get("token") or message.get("topic") or message.get("condition") or ""
        fault = await state.injected_fault("fcm", target)
        if fault is not None:
            return fault_response(fault)
        message_id = f"0:{int(now() * 1000)}%{secrets.token_hex(8)}"
        if validate_only:
            message_id = "fake_message_id"
        else:
            data = message.get("data") or {}
            state.accept("fcm", data.get("notification_id"), now())
            if state.recent.maxlen:
                state.recent.append({"platform": "fcm", "message": message, "received_at": now()})
        name = f"projects/{self._project}/messages/{message_id}"
        return 200, [_JSON], orjson.dumps({"name": name})

    def _validate(
        self, method: str, path: str, headers: Headers, body: bytes
    ) -> tuple[Response | None, tuple[dict[str, Any], bool] | None]:
        if method != "POST":
            return rpc_error(400, "Method not allowed; use POST."), None
        if not self._authorized(headers.get("authorization")):
            return rpc_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            ), None
        if path != self._send_path:
            return rpc_error(403, "Permission denied on the project (or it does not exist)."), None
        try:
            return None, check_message(body)
        except MessageError as exc:
            return rpc_error(
                400,
                exc.message,
                error_code="INVALID_ARGUMENT" if exc.token_level else None,
                violations=None if exc.token_level else [{"field": exc.field}],
            ), None

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not self._state.access_token_valid(token, now()):
            return False
        if self._state.auth.reject_fcm > 0:
            self._state.auth.reject_fcm -= 1
            return False
        return True
