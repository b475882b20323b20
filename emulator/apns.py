"""The APNs stand-in: ``POST /3/device/{token}`` over HTTP/2, strict like Apple.

Checks, in order: HTTP/2, method, path and token (hex, 64..200 digits), provider JWT
(ES256, ``kid`` = a registered key id, ``iss`` = that key's team id, ``iat`` under 1 h old,
key not revoked, the same key as the connection's first push, else UnrelatedKeyIdInToken),
``apns-topic`` (one of the key's topics; another key's topic is
TopicDisallowed, an unknown one BadTopic),
``apns-push-type`` (alert | background), ``apns-priority`` (10 | 5 | 1; background needs
5), ``apns-id`` (UUID, echoed), ``apns-expiration``, ``apns-collapse-id`` (<= 64 bytes),
then the payload (JSON object with ``aps``, <= 4096 bytes; background needs
``content-available: 1``). Then the key's fault, else the device token's, if any, and the
count (under the key's ``TEAM/KEY`` too).
Token, collapse id and payload limit are the project's APNs rules
(``notifier.providers.spec.APNS``), the table the API validates with.
Answers follow PROTOCOLS.md sections 2.4-2.5: 200 with ``apns-id``, else ``{"reason"}``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import uuid_utils

from emulator.credentials import ApnsKey, CredentialRegistry
from emulator.state import EmulatorState, Fault, FaultKind, now
from notifier.providers.spec import APNS

Response = tuple[int, list[tuple[str, str]], bytes]
Headers = Any  # granian's RSGIHeaders: a read-only mapping with .get(name)

MAX_PAYLOAD = APNS.payload_limit
PREFIX = "/3/device/"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PUSH_TYPES = {"alert", "background"}
_PRIORITIES = {"10", "5", "1"}
_JSON = ("content-type", "application/json")


def _error(status: int, reason: str, apns_id: str | None = None, **extra: Any) -> Response:
    headers = [_JSON]
    if apns_id:
        headers.append(("apns-id", apns_id))
    return status, headers, orjson.dumps({"reason": reason, **extra})


def _check_topic(headers: Headers, key: ApnsKey, registry: CredentialRegistry) -> str | None:
    """The reason the topic is refused for this key: another team's app is disallowed."""
    topic = headers.get("apns-topic")
    if not topic:
        return "MissingTopic"
    if topic in key.topics:
        return None
    return "TopicDisallowed" if registry.topic_owned_elsewhere(topic) else "BadTopic"


def _check_headers(headers: Headers) -> str | None:
    """The reason the APNs headers (but the topic) are refused, or ``None``."""
    push_type = headers.get("apns-push-type", "alert")
    if push_type not in _PUSH_TYPES:
        return "InvalidPushType"
    priority = headers.get("apns-priority", "10")
    if priority not in _PRIORITIES or (push_type == "background" and priority != "5"):
        return "BadPriority"
    expiration = headers.get("apns-expiration")
    if expiration is not None and not expiration.isdigit():
        return "BadExpirationDate"
    collapse_id = headers.get("apns-collapse-id")
    if collapse_id is not None and not APNS.collapse_ok(collapse_id):
        return "BadCollapseId"
    return None


def _check_payload(body: bytes, push_type: str) -> tuple[int, str] | None:
    if not body:
        return 400, "PayloadEmpty"
    if len(body) > MAX_PAYLOAD:
        return 413, "PayloadTooLarge"
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, "BadPayload"
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        return 400, "BadPayload"
    aps = payload["aps"]
    if push_type == "background":
        if aps.get("content-available") != 1 or "alert" in aps:
            return 400, "InvalidPushType"
    elif not any(key in aps for key in ("alert", "badge", "sound")):
        return 400, "InvalidPushType"
    return None


def fault_response(fault: Fault, apns_id: str) -> Response:
    """The answer APNs would give for a token in this state."""
    if fault.kind is FaultKind.DEAD:
        return _error(410, "Unregistered", apns_id, timestamp=fault.since_ms)
    if fault.kind is FaultKind.BAD:
        return _error(400, "BadDeviceToken", apns_id)
    if fault.kind is FaultKind.ERROR:
        extra = {"timestamp": fault.since_ms} if fault.status == 410 else {}
        return _error(fault.status, fault.reason or "InternalServerError", apns_id, **extra)
    if fault.kind is FaultKind.RATE_LIMITED:
        status, headers, body = _error(429, "TooManyRequests", apns_id)
        headers.append(("retry-after", str(1 if fault.retry_after is None else fault.retry_after)))
        return status, headers, body
    status, headers, body = _error(503, "ServiceUnavailable", apns_id)
    if fault.retry_after is not None:
        headers.append(("retry-after", str(fault.retry_after)))
    return status, headers, body


class ApnsService:
    """Handles APNs pushes against every registered key (team id, key id, topics)."""

    def __init__(self, state: EmulatorState, registry: CredentialRegistry) -> None:
        self._state = state
        self._registry = registry

    async def handle(
        self, method: str, path: str, http_version: str, headers: Headers, body: bytes, client: str
    ) -> Response:
        state = self._state
        key = self._registry.apns_key_for(headers.get("authorization"))
        response = self._validate(method, path, http_version, headers, body, key, client)
        if response is not None:
            state.reject("apns")
            if key is not None:
                key.counts.rejected += 1
            return response
        assert key is not None  # _validate refuses a push without a known key
        token = path[len(PREFIX) :]
        state.seen_connection("apns", client)
        apns_id = headers.get("apns-id") or str(uuid_utils.uuid4())
        fault = key.take_fault()
        if fault is not None:
            state.reject("apns")
        else:
            fault = await state.injected_fault("apns", token)
        if fault is not None:
            key.counts.rejected += 1
            return fault_response(fault, apns_id)
        state.accept("apns", apns_id.lower(), now(), key.name)
        key.counts.accepted += 1
        if state.recent.maxlen:
            state.recent.append(_record(token, headers, body, key.name))
        return 200, [("apns-id", apns_id)], b""

    def _validate(
        self,
        method: str,
        path: str,
        http_version: str,
        headers: Headers,
        body: bytes,
        key: ApnsKey | None,
        client: str,
    ) -> Response | None:
        if http_version != "2":
            return _error(505, "HTTP2Required")
        if method != "POST":
            return _error(405, "MethodNotAllowed")
        token = path[len(PREFIX) :]
        if not token:
            return _error(400, "MissingDeviceToken")
        apns_id = headers.get("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            return _error(400, "BadMessageId")
        auth_reason = self._auth_reason(headers.get("authorization"), key)
        if auth_reason is not None:
            return _error(403, auth_reason, apns_id)
        assert key is not None
        if not self._registry.bind_connection(client, key, now()):
            return _error(403, "UnrelatedKeyIdInToken", apns_id)
        reason = _check_topic(headers, key, self._registry) or _check_headers(headers)
        if reason is not None:
            return _error(400, reason, apns_id)
        if not APNS.token_ok(token):
            return _error(400, "BadDeviceToken", apns_id)
        problem = _check_payload(body, headers.get("apns-push-type", "alert"))
        if problem is not None:
            return _error(problem[0], problem[1], apns_id)
        return None

    def _auth_reason(self, authorization: str | None, key: ApnsKey | None) -> str | None:
        """The APNs reason the provider JWT is refused, or ``None``."""
        if not authorization:
            return "MissingProviderToken"
        if key is None or key.verifier is None:  # a kid no team registered
            return "InvalidProviderToken"
        reason = key.verifier.check(authorization, now())
        if reason is None and key.revoked:  # Apple answers a revoked key like a bad one
            reason = "InvalidProviderToken"
        if reason is None and self._state.auth.reject_apns > 0:
            self._state.auth.reject_apns -= 1
            reason = "ExpiredProviderToken"
        return reason


_RECORDED_HEADERS = (
    "apns-id",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
)


def _record(token: str, headers: Headers, body: bytes, credential: str) -> dict[str, Any]:
    """An accepted push as the control API shows it (no authorization header).

    The payload stays raw bytes here; the control API decodes it when asked.
    """
    return {
        "platform": "apns",
        "token": token,
        "headers": {name: value for name in _RECORDED_HEADERS if (value := headers.get(name))},
        "payload": body,
        "received_at": now(),
        "credential": credential,
    }
