"""The FCM stand-in: the OAuth2 token endpoint and ``messages:send``, strict like Google.

``POST /token`` takes the JWT-bearer grant of the service account (RS256 assertion:
``kid`` = private_key_id, ``iss`` = client_email, ``aud`` = token_uri, a firebase.messaging
or cloud-platform scope, iat/exp within an hour) and answers ``{access_token, expires_in,
token_type}``. ``POST /v1/projects/{project}/messages:send`` needs such a token (else 401
UNAUTHENTICATED without details) and a message per PROTOCOLS.md 1.3; errors use the
google.rpc shape with ``FcmError`` / ``BadRequest`` details (PROTOCOLS.md 1.4, 1.5, 6).

Every service account of :class:`~emulator.credentials.CredentialRegistry` is served: the
assertion's ``kid`` picks the account, the access token is bound to it, and a send to
another project's URL is 403 PERMISSION_DENIED ("Permission 'cloudmessaging.messages.create'
denied on resource ..."), what Google answers a credential of the wrong project. Then the
project's fault (429, error), the device token's fault, and the count under the project.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs

import orjson

from emulator.auth import GrantRefused
from emulator.credentials import CredentialRegistry, FcmAccount
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


def _denied(path: str) -> Response:
    """FCM's answer when the URL names a project the token's account is not in."""
    project = path.removeprefix("/v1/projects/").partition("/")[0]
    return rpc_error(
        403,
        f"Permission 'cloudmessaging.messages.create' denied on resource "
        f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).",
    )


_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access "
    "token, login cookie or other valid authentication credential."
)


class FcmService:
    """Token endpoint and send endpoint for every service account of every project."""

    def __init__(self, state: EmulatorState, registry: CredentialRegistry) -> None:
        self._state = state
        self._registry = registry

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
        account = self._registry.account_for_assertion(assertion)
        if account is None:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        try:
            account.verifier.verify(assertion, now())
        except GrantRefused as exc:
            return _oauth_error(exc.error, exc.description)
        refused = self._refusal(account)
        if refused is not None:
            return refused
        access_token = "ya29.emu-" + secrets.token_urlsafe(32)
        lifetime = self._state.issue_access_token(access_token, now(), account.key_id)
        account.project.counts.token_requests += 1
        answer = {"access_token": access_token, "expires_in": lifetime, "token_type": "Bearer"}
        return 200, [_JSON], orjson.dumps(answer)

    def _refusal(self, account: FcmAccount) -> Response | None:
        """Google's refusal of a correct assertion: revoked key, injected refusal."""
        if account.revoked:  # what Google answers for a deleted service-account key
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        refusal = account.project.token_refusal
        if refusal is not None:
            status, error = refusal
            body = {"error": error, "error_description": "Refused by the emulator."}
            return status, [_JSON], orjson.dumps(body)
        if self._state.auth.reject_token > 0:
            self._state.auth.reject_token -= 1
            return _oauth_error("invalid_grant", "Invalid grant: rejected by the emulator.")
        return None

    async def send(
        self, method: str, path: str, headers: Headers, body: bytes, client: str
    ) -> Response:
        """``POST /v1/projects/{project}/messages:send``."""
        state = self._state
        if method != "POST":
            state.reject("fcm")
            return rpc_error(400, "Method not allowed; use POST.")
        account = self._account(headers.get("authorization"))
        if account is None:
            state.reject("fcm")
            return rpc_error(401, _UNAUTHENTICATED)
        project = account.project
        response, checked = self._validate(account, path, body)
        if response is not None or checked is None:
            state.reject("fcm")
            project.counts.rejected += 1
            return response or rpc_error(400, "Invalid message.")
        message, validate_only = checked
        state.seen_connection("fcm", client)
        credential_fault = project.take_fault()
        if credential_fault is not None:
            state.reject("fcm")
            project.counts.rejected += 1
            return fault_response(credential_fault)
        target = message.get("token") or message.get("topic") or message.get("condition") or ""
        fault = await state.injected_fault("fcm", target)
        if fault is not None:
            project.counts.rejected += 1
            return fault_response(fault)
        message_id = f"0:{int(now() * 1000)}%{secrets.token_hex(8)}"
        if validate_only:
            message_id = "fake_message_id"
        else:
            data = message.get("data") or {}
            state.accept("fcm", data.get("notification_id"), now(), project.project_id)
            project.counts.accepted += 1
            if state.recent.maxlen:
                record = {"platform": "fcm", "message": message, "received_at": now()}
                record["credential"] = project.project_id
                state.recent.append(record)
        name = f"projects/{project.project_id}/messages/{message_id}"
        return 200, [_JSON], orjson.dumps({"name": name})

    def _validate(
        self, account: FcmAccount, path: str, body: bytes
    ) -> tuple[Response | None, tuple[dict[str, Any], bool] | None]:
        if account.revoked:  # the service account is gone: its tokens are worthless
            return rpc_error(401, _UNAUTHENTICATED), None
        if path != f"/v1/projects/{account.project.project_id}/messages:send":
            return _denied(path), None
        try:
            return None, check_message(body)
        except MessageError as exc:
            return rpc_error(
                400,
                exc.message,
                error_code="INVALID_ARGUMENT" if exc.token_level else None,
                violations=None if exc.token_level else [{"field": exc.field}],
            ), None

    def _account(self, authorization: str | None) -> FcmAccount | None:
        """The service account a valid bearer token was minted for, else ``None``."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        key_id = self._state.access_token_account(token, now())
        if key_id is None:
            return None
        if self._state.auth.reject_fcm > 0:
            self._state.auth.reject_fcm -= 1
            return None
        return self._registry.accounts.get(key_id)
