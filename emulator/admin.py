"""The control API under ``/_emulator/`` on the emulator's own port (JSON in, JSON out).

=======  ==============================  ==================================================
GET      /_emulator/health               ``{"ok": true, "pid": ...}``
GET      /_emulator/summary              ``{accepted, unique, duplicates, rejected,
                                         token_requests, by_platform, by_credential}``
GET      /_emulator/deliveries?skip=N    bulk export ``{id: [count, first_received_at]}`` of
                                         the ids first received after the first N
GET      /_emulator/deliveries/{id}      ``{id, count, first_received_at, last_received_at,
                                         platform, credential}`` or 404
GET      /_emulator/requests?limit=N     the last accepted pushes (headers, payload)
POST     /_emulator/faults               ``{"token", "kind", "count", "retry_after",
                                         "delay_ms", "since_ms", "status", "reason"}``;
                                         token ``"*"`` = every token without its own fault
DELETE   /_emulator/faults[/{token}]     clear every fault, or one token's
POST     /_emulator/auth                 ``{"expire_access_tokens": true, "reject_fcm": N,
                                         "reject_apns": N, "reject_token": N,
                                         "token_lifetime": S}`` (any subset)
GET      /_emulator/latency              the latency profile: ``{"fcm": {"min_ms",
                                         "max_ms"}, "apns": {...}, "profile":
                                         "fcm=30-60,apns=20-80", "distribution"}``
POST     /_emulator/latency              replace it: ``{"fcm": {"min_ms": 30, "max_ms":
                                         60}, "apns": {...}}`` (a platform left out answers
                                         at once) or ``{"profile": "fcm=30-60,apns=20-80"}``
DELETE   /_emulator/latency              back to the profile given at start (``--latency``)
POST     /_emulator/reset                forget counts, faults and switches (credential
                                         faults too; added credentials stay); the latency
                                         profile goes back to the one given at start
=======  ==============================  ==================================================

Credentials (several FCM projects and APNs keys, their faults) have their own routes:
see :mod:`emulator.admin_credentials`. ``by_credential`` is ``{"fcm": {project_id:
{accepted, rejected, token_requests}}, "apns": {"TEAM/KEY": {accepted, rejected}}}``;
a delivery's ``credential`` is the FCM project id or APNs ``TEAM/KEY`` of its last push.

Fault kinds (per device token; a token has one fault plus, independently, a delay):

- ``dead``: APNs 410 ``{"reason": "Unregistered", "timestamp": since_ms}``, FCM 404
  UNREGISTERED. Until cleared.
- ``bad``: APNs 400 BadDeviceToken, FCM 400 INVALID_ARGUMENT with an FcmError. Until cleared.
- ``flaky`` (count N, optional retry_after S): the next N requests get APNs 503
  ServiceUnavailable / FCM 503 UNAVAILABLE (with ``Retry-After: S`` when given), later ones
  succeed.
- ``rate_limited`` (count N, retry_after S): the next N get 429 (APNs TooManyRequests, FCM
  QUOTA_EXCEEDED) with ``Retry-After: S``.
- ``slow`` (delay_ms): every request waits that long before it is handled.
- ``error`` (count N, status, reason): the next N get that status with that APNs reason or
  FCM errorCode (empty reason: FCM error without an FcmError detail).

The latency profile (:mod:`emulator.latency`) is global per platform, unlike ``slow``: every
push answer of the platform waits a delay drawn uniformly from ``[min_ms, max_ms]``.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from emulator import admin_credentials
from emulator.credentials import CredentialRegistry
from emulator.latency import LatencyProfile
from emulator.state import EmulatorState, Fault, FaultKind

Response = tuple[int, list[tuple[str, str]], bytes]
PREFIX = "/_emulator/"
_JSON = ("content-type", "application/json")


def _json(status: int, value: Any) -> Response:
    return status, [_JSON], orjson.dumps(value)


def _bad(message: str) -> Response:
    return _json(400, {"error": message})


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _set_fault(state: EmulatorState, body: dict[str, Any]) -> Response:
    token = body.get("token")
    if not isinstance(token, str) or not token:
        return _bad("token is required")
    try:
        kind = FaultKind(str(body.get("kind")))
        fault = Fault(
            kind=kind,
            remaining=_int(body, "count", 1),
            retry_after=_int(body, "retry_after", 1) if "retry_after" in body else None,
            delay_ms=_int(body, "delay_ms", 0),
            since_ms=_int(body, "since_ms", int(time.time() * 1000)),
            status=_int(body, "status", 500),
            reason=str(body.get("reason", "")),
        )
        if not 400 <= fault.status <= 599:
            raise ValueError("status must be an HTTP error status (400..599)")
    except ValueError as exc:
        return _bad(str(exc))
    state.set_fault(token, fault)
    return _json(200, {"ok": True})


def _set_auth(state: EmulatorState, body: dict[str, Any]) -> Response:
    try:
        auth = state.auth
        auth.reject_fcm = _int(body, "reject_fcm", auth.reject_fcm)
        auth.reject_apns = _int(body, "reject_apns", auth.reject_apns)
        auth.reject_token = _int(body, "reject_token", auth.reject_token)
        auth.token_lifetime = _int(body, "token_lifetime", auth.token_lifetime)
    except ValueError as exc:
        return _bad(str(exc))
    expired = state.expire_access_tokens() if body.get("expire_access_tokens") else 0
    return _json(200, {"ok": True, "expired": expired})


def _set_latency(state: EmulatorState, body: dict[str, Any]) -> Response:
    try:
        state.latency = LatencyProfile.from_json(body)
    except ValueError as exc:
        return _bad(f"latency: {exc}")
    return _json(200, state.latency.to_json())


def _decoded(entry: dict[str, Any]) -> dict[str, Any]:
    payload = entry.get("payload")
    if isinstance(payload, bytes):
        return {**entry, "payload": orjson.loads(payload)}
    return entry


def _get(state: EmulatorState, registry: CredentialRegistry, route: str, query: str) -> Response:
    if route == "health":
        return _json(200, {"ok": True, "pid": os.getpid()})
    if route == "latency":
        return _json(200, state.latency.to_json())
    if route == "summary":
        return _json(200, {**state.summary(), "by_credential": registry.summary()})
    if route == "deliveries":
        skip = parse_qs(query).get("skip", ["0"])[0]
        return _json(200, state.export(int(skip) if skip.isdigit() else 0))
    if route.startswith("deliveries/"):
        found = state.delivery(unquote(route[len("deliveries/") :]).lower())
        return _json(200, found) if found else _json(404, {"error": "not delivered"})
    if route == "requests":
        limit = parse_qs(query).get("limit", ["100"])[0]
        count = int(limit) if limit.isdigit() else 100
        recent = list(state.recent)[-count:] if count else []
        return _json(200, [_decoded(entry) for entry in recent])
    return _json(404, {"error": "no such control route"})


def handle(
    state: EmulatorState,
    registry: CredentialRegistry,
    method: str,
    path: str,
    query: str,
    raw: bytes,
) -> Response:
    """Serve one control request; ``path`` starts with ``/_emulator/``."""
    route = path[len(PREFIX) :].rstrip("/")
    if admin_credentials.is_credential_route(route):
        return admin_credentials.handle(registry, method, unquote(route), raw)
    if method == "GET":
        return _get(state, registry, route, query)
    if method == "DELETE" and (route == "faults" or route.startswith("faults/")):
        token = unquote(route[len("faults/") :]) if "/" in route else None
        if token is None:
            state.faults.clear()
            state.delays.clear()
        else:
            state.clear_fault(token)
        return _json(200, {"ok": True})
    if method == "DELETE" and route == "latency":
        state.latency = state.default_latency
        return _json(200, state.latency.to_json())
    if method != "POST":
        return _json(405, {"error": "method not allowed"})
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return _bad("body must be JSON")
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")
    if route == "faults":
        return _set_fault(state, body)
    if route == "auth":
        return _set_auth(state, body)
    if route == "latency":
        return _set_latency(state, body)
    if route == "reset":
        state.reset()
        registry.reset()
        return _json(200, {"ok": True})
    return _json(404, {"error": "no such control route"})
