"""The control API's credential routes: more FCM projects and APNs keys, and their faults.

=======  ======================================  ============================================
GET      /_emulator/credentials                  every service account and key, no secrets
POST     /_emulator/fcm/projects                 ``{"project_id", "client_email"?}`` -> a new
                                                 service-account JSON for that project (again
                                                 for the same project: a replacement key)
POST     /_emulator/fcm/projects/{p}/faults      ``{"kind": "revoked", "key_id"?}`` |
                                                 ``{"kind": "token_refused", "status"?,
                                                 "error"?}`` | ``{"kind": "rate_limited",
                                                 "retry_after"?, "count"?}`` |
                                                 ``{"kind": "error", "status", "reason"?,
                                                 "count"?}``
DELETE   /_emulator/fcm/projects/{p}/faults      heal the project (revocations too)
POST     /_emulator/apns/keys                    ``{"team_id"?, "key_id"?, "topics"?}`` ->
                                                 ``{team_id, key_id, topics, key_pem}``
POST     /_emulator/apns/keys/{key_id}/faults    ``revoked`` | ``rate_limited`` | ``error``
DELETE   /_emulator/apns/keys/{key_id}/faults    heal the key
=======  ======================================  ============================================

A fault without ``count`` lasts until cleared. Unknown project or key: 404.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.credentials import (
    APPLE_ID,
    PROJECT_ID,
    CredentialFault,
    CredentialRegistry,
    Faulted,
)
from emulator.keys import DEFAULT_TOPIC, new_apns_key, new_service_account, random_apple_id
from emulator.state import Fault, FaultKind

Response = tuple[int, list[tuple[str, str]], bytes]
_JSON = ("content-type", "application/json")
_OAUTH_ERRORS = {"invalid_grant", "invalid_client", "unauthorized_client", "access_denied"}


def _json(status: int, value: Any) -> Response:
    return status, [_JSON], orjson.dumps(value)


def _bad(message: str) -> Response:
    return _json(400, {"error": message})


def _count(body: dict[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _status(body: dict[str, Any], default: int) -> int:
    status = _count(body, "status", default)
    if status is None or not 400 <= status <= 599:
        raise ValueError("status must be an HTTP error status (400..599)")
    return status


def _push_fault(body: dict[str, Any]) -> CredentialFault:
    """A ``rate_limited`` or ``error`` fault for every push under a credential."""
    kind = body.get("kind")
    count = _count(body, "count", None)
    if count == 0:
        raise ValueError("count must be at least 1 (omit it: until cleared)")
    if kind == "rate_limited":
        retry_after = _count(body, "retry_after", 1)
        return CredentialFault(Fault(FaultKind.RATE_LIMITED, retry_after=retry_after), count)
    if kind == "error":
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise ValueError("reason must be a string")
        fault = Fault(FaultKind.ERROR, status=_status(body, 500), reason=reason)
        return CredentialFault(fault, count)
    raise ValueError("kind must be revoked, token_refused (FCM), rate_limited or error")


def _add_fcm(registry: CredentialRegistry, body: dict[str, Any]) -> Response:
    project_id = body.get("project_id")
    if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
        return _bad("project_id must be lower-case letters, digits and '-' (a letter first)")
    email = body.get("client_email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        return _bad("client_email must be an e-mail address")
    info = new_service_account(project_id, registry.token_uri, email)
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    registry.add_fcm_account(
        project_id, info["client_email"], info["private_key_id"], key.public_key()
    )
    entry = {"provider": "fcm", "project_id": project_id, "client_email": info["client_email"]}
    registry.save({**entry, "key_id": info["private_key_id"]}, key.public_key())
    return _json(200, info)


def _add_apns(registry: CredentialRegistry, body: dict[str, Any]) -> Response:
    team_id = body.get("team_id") or random_apple_id()
    key_id = body.get("key_id") or random_apple_id()
    if not all(isinstance(i, str) and APPLE_ID.fullmatch(i) for i in (team_id, key_id)):
        return _bad("team_id and key_id must be 1..32 letters or digits")
    topics = body.get("topics", [DEFAULT_TOPIC])
    if (
        not isinstance(topics, list)
        or not topics
        or not all(isinstance(t, str) and t for t in topics)
    ):
        return _bad("topics must be a non-empty list of bundle ids")
    if key_id in registry.apns_keys:
        return _json(409, {"error": f"APNs key id {key_id} is already registered"})
    private, pem = new_apns_key()
    registry.add_apns_key(team_id, key_id, private.public_key(), set(topics))
    entry = {"provider": "apns", "team_id": team_id, "key_id": key_id, "topics": topics}
    registry.save(entry, private.public_key())
    return _json(200, {"team_id": team_id, "key_id": key_id, "topics": topics, "key_pem": pem})


def _fcm_fault(registry: CredentialRegistry, project_id: str, body: dict[str, Any]) -> Response:
    project = registry.projects[project_id]
    kind = body.get("kind")
    if kind == "revoked":
        key_id = body.get("key_id")
        if key_id is not None and not isinstance(key_id, str):
            return _bad("key_id must be a string")
        revoked = registry.revoke_fcm(project_id, key_id)
        return _json(200, {"ok": True, "revoked": revoked})
    if kind == "token_refused":
        error = body.get("error", "invalid_grant")
        if error not in _OAUTH_ERRORS and error != "temporarily_unavailable":
            return _bad(f"error must be one of {sorted(_OAUTH_ERRORS)} or temporarily_unavailable")
        project.token_refusal = (_status(body, 400), error)
        return _json(200, {"ok": True})
    return _set_push_fault(project, body)


def _apns_fault(registry: CredentialRegistry, key_id: str, body: dict[str, Any]) -> Response:
    key = registry.apns_keys[key_id]
    if body.get("kind") == "revoked":
        key.revoked = True
        return _json(200, {"ok": True})
    return _set_push_fault(key, body)


def _set_push_fault(target: Faulted, body: dict[str, Any]) -> Response:
    target.fault = _push_fault(body)
    return _json(200, {"ok": True})


def _faults(registry: CredentialRegistry, method: str, route: str, raw: bytes) -> Response:
    """``fcm/projects/{p}/faults`` and ``apns/keys/{key}/faults``."""
    provider, _, rest = route.partition("/")
    name = rest.split("/")[1]
    known = registry.projects if provider == "fcm" else registry.apns_keys
    if name not in known:
        return _json(
            404, {"error": f"no such {'FCM project' if provider == 'fcm' else 'APNs key'}"}
        )
    if method == "DELETE":
        if provider == "fcm":
            registry.heal_fcm(name)
        else:
            registry.heal_apns(registry.apns_keys[name])
        return _json(200, {"ok": True})
    body = _body(raw)
    if body is None:
        return _bad("body must be a JSON object")
    try:
        if provider == "fcm":
            return _fcm_fault(registry, name, body)
        return _apns_fault(registry, name, body)
    except ValueError as exc:
        return _bad(str(exc))


def _body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def is_credential_route(route: str) -> bool:
    return route == "credentials" or route.startswith(("fcm/", "apns/"))


def handle(registry: CredentialRegistry, method: str, route: str, raw: bytes) -> Response:
    """Serve one credential route (``route`` is the path after ``/_emulator/``)."""
    parts = route.split("/")
    if route == "credentials":
        if method != "GET":
            return _json(405, {"error": "method not allowed"})
        return _json(200, registry.describe())
    if (
        len(parts) == 4
        and parts[:2] in (["fcm", "projects"], ["apns", "keys"])
        and parts[3] == "faults"
    ):
        if method not in ("POST", "DELETE"):
            return _json(405, {"error": "method not allowed"})
        return _faults(registry, method, route, raw)
    if route in ("fcm/projects", "apns/keys"):
        if method != "POST":
            return _json(405, {"error": "method not allowed"})
        body = _body(raw)
        if body is None:
            return _bad("body must be a JSON object")
        return _add_fcm(registry, body) if route == "fcm/projects" else _add_apns(registry, body)
    return _json(404, {"error": "no such control route"})
