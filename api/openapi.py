"""The OpenAPI 3.1 document: request schemas and parameters from the pydantic models
(which read the provider rules table), answers from the shapes the views build.

``tests/api/test_openapi.py`` walks the router and fails when a route and this document
disagree, so a new handler cannot ship undocumented; ``tests/api/test_schemathesis.py``
holds the API to it.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from api.admin_schemas import ADMIN_REQUESTS, ADMIN_SHAPES, APP_PATH_PATTERN
from api.body import size_text
from api.problems import PROBLEM_TYPE
from api.responses import SHAPES
from api.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_BATCH_BODY_BYTES,
    MAX_BODY_BYTES,
    NO_NUL_PATTERN,
    BatchRequest,
    DeviceRequest,
    ListQuery,
    NotificationRequest,
    any_token_pattern,
    payload_rules_text,
)
from notifier.models import Lane, Platform
from notifier.providers.spec import SPECS

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _response_schemas() -> dict[str, Any]:
    """Every answer's schema, from the shapes the views build (``api/responses.py``)."""
    schemas: dict[str, Any] = {}
    for name, shape in {**SHAPES, **ADMIN_SHAPES}.items():
        schema = TypeAdapter(shape).json_schema(ref_template=_REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas


_ERROR_TEXT = {
    400: "Malformed JSON, or a body that is not valid data of its Content-Encoding",
    401: "Missing or unknown API key",
    403: "The wrong kind of key: an admin key on an app's route, or an app's key on an admin route",
    404: "Not found (or another app's)",
    408: "The body did not arrive whole in time (NOTIFIER_API_BODY_TIMEOUT_SECONDS)",
    409: "Conflict",
    413: f"Body larger than {size_text(MAX_BODY_BYTES)}",
    415: "Body is not application/json, or a Content-Encoding other than gzip or deflate",
    422: "Body or parameters break the rules; `errors` lists every invalid field",
    429: "Rate limit of the API key exceeded (see Retry-After)",
    503: "Store unavailable",
}


def _json(schema_name: str, description: str, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": _ref(schema_name)}}}


def _errors(*codes: int, text: dict[int, str] | None = None) -> dict[str, Any]:
    """Problem answers for ``codes`` and the common ones; ``text`` overrides descriptions."""
    common = (401, 429, 503)
    described = {**_ERROR_TEXT, **(text or {})}
    return {str(c): _json("Problem", described[c], PROBLEM_TYPE) for c in sorted({*codes, *common})}


_EXAMPLE = {
    "to": {"platform": Platform.APNS.value, "token": "a1" * 32},
    "title": "Hi",
    "body": "text",
    "data": {"k": "v"},
    "priority": "high",
    "lane": Lane.TRANSACTIONAL.value,
    "ttl_seconds": 3600,
    "collapse_key": "c1",
}
_EXAMPLES = {
    "NotificationRequest": _EXAMPLE,
    "BatchRequest": {
        "notifications": [
            _EXAMPLE,  # its lane given: transactional; the next item is bulk, the default
            {"to": {"platform": Platform.FCM.value, "token": "fcm-token-1"}, "data": {"k": "v"}},
        ]
    },
    "DeviceRequest": {"user_id": "u1", "platform": Platform.FCM.value},
    "FcmCredentialRequest": {
        "service_account": {
            "type": "service_account",
            "project_id": "my-project",
            "client_email": "notifier@my-project.iam.gserviceaccount.com",
            "private_key_id": "0123456789abcdef",
            "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    },
    "ApnsCredentialRequest": {
        "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
        "key_id": "ABC123DEFG",
        "team_id": "DEF123GHIJ",
        "topics": ["com.example.app"],
    },
}


def _body(schema_name: str) -> dict[str, Any]:
    media = {"schema": _ref(schema_name), "example": _EXAMPLES[schema_name]}
    return {"required": True, "content": {"application/json": media}}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _query_params() -> list[dict[str, Any]]:
    """``GET /v1/notifications``' parameters, from the model that validates them."""
    schema = ListQuery.model_json_schema(ref_template=_REF)
    params = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        params.append(_param(name, "query", {**prop, **(branches[0] if branches else {})}, False))
    return params


_ID = _param("id", "path", {"type": "string"})
_TOKEN = _param("token", "path", {"type": "string"})
_DEVICE_TOKEN = {
    **_param("token", "path", {"type": "string", "pattern": any_token_pattern()}),
    "description": "The device's push token. It must also keep the rule of the platform "
    "given in the body, which JSON Schema cannot tie to a path parameter (else 422): "
    + "; ".join(spec.token_rule for spec in SPECS.values())
    + ".",
}
_USER_ID = _param(
    "user_id", "path", ListQuery.model_json_schema()["properties"]["user_id"]["anyOf"][0]
)
_IDEMPOTENCY = _param(
    "Idempotency-Key", "header", {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}, False
)


def _paths() -> dict[str, dict[str, Any]]:
    accepted = _json("Accepted", "Accepted: stored and queued (or scheduled)")
    replay = _json("Accepted", "Idempotent replay: the first answer, nothing created")
    write_errors = (400, 408, 413, 415, 422)
    return {
        "/v1/notifications": {
            "post": {
                "operationId": "createNotification",
                "summary": "Send one notification (to a device, or to every active device of "
                "a user; a user without an active device is 422)",
                "description": payload_rules_text(),
                "parameters": [_IDEMPOTENCY],
                "requestBody": _body("NotificationRequest"),
                "responses": {"202": accepted, "200": replay, **_errors(*write_errors, 409)},
            },
            "get": {
                "operationId": "listNotifications",
                "summary": "Cursor-paged list, newest first",
                "parameters": _query_params(),
                "responses": {
                    "200": _json("NotificationPage", "A page"),
                    **_errors(422),
                },
            },
        },
        "/v1/notifications/batch": {
            "post": {
                "operationId": "createNotificationBatch",
                "summary": "Up to 500 notifications; per-item results in input order",
                "description": "The envelope (1..500 JSON objects) is checked first: an "
                "envelope that breaks it, or an item that is not an object, is 422. Each "
                "object item is then checked on its own against BatchItem (payload limits "
                "included): one that breaks a rule gets `{error: <problem>}` in its place "
                "in the 200 results, and the valid items are stored.",
                "requestBody": _body("BatchRequest"),
                "responses": {
                    "200": _json("BatchResults", "Per-item results"),
                    **_errors(
                        *write_errors,
                        text={413: f"Body larger than {size_text(MAX_BATCH_BODY_BYTES)}"},
                    ),
                },
            }
        },
        "/v1/notifications/{id}": {
            "get": {
                "operationId": "getNotification",
                "parameters": [_ID],
                "responses": {"200": _json("Notification", "Status and history"), **_errors(404)},
            },
            "delete": {
                "operationId": "cancelNotification",
                "parameters": [_ID],
                "responses": {
                    "200": _json("Notification", "Cancelled"),
                    **_errors(404, 409),
                },
            },
        },
        "/v1/devices/{token}": {
            "put": {
                "operationId": "putDevice",
                "parameters": [_DEVICE_TOKEN],
                "requestBody": _body("DeviceRequest"),
                "responses": {
                    "200": _json("Device", "Refreshed"),
                    "201": _json("Device", "Registered"),
                    **_errors(*write_errors),
                },
            },
            "delete": {
                "operationId": "deleteDevice",
                "parameters": [_TOKEN],
                "responses": {"204": {"description": "Unregistered"}, **_errors(404)},
            },
        },
        "/v1/users/{user_id}/devices": {
            "get": {
                "operationId": "listUserDevices",
                "parameters": [_USER_ID],
                "responses": {"200": _json("DeviceList", "The user's devices"), **_errors(422)},
            }
        },
        "/v1/apps/me/credentials/health": {
            "get": {
                "operationId": "getCredentialsHealth",
                "description": "Per provider: whether the calling app pushes under its own "
                "credential or the environment's, and that credential's health as the "
                "workers last reported it (null: not reported since it was set). "
                "docs/credentials.md.",
                "responses": {
                    "200": _json("CredentialHealthList", "The app's credentials' health"),
                    **_errors(),
                },
            }
        },
        **_admin_paths(),
        **_ops_paths(),
    }


_ADMIN_APP = {
    **_param("app", "path", {"type": "string", "pattern": APP_PATH_PATTERN}),
    "description": "The app's name, as `notifier apikey create --app` took it",
}
_KEY_LOADS = {
    "fcm": "The service account's private_key must load as an RSA private key in PEM "
    "(else 422 at /service_account/private_key).",
    "apns": "The private key must load as an EC P-256 private key in PEM, the .p8 file's "
    "text (else 422 at /private_key).",
}


def _admin_paths() -> dict[str, dict[str, Any]]:
    """The admin API (admin keys only: api/routes_admin.py), one path per provider."""
    paths: dict[str, dict[str, Any]] = {}
    for provider, body, info in (
        ("fcm", "FcmCredentialRequest", "FcmCredentialInfo"),
        ("apns", "ApnsCredentialRequest", "ApnsCredentialInfo"),
    ):
        name = provider.capitalize()
        no_such = {404: f"The app has no {provider} credential, or a path that does not route"}
        paths[f"/v1/admin/apps/{{app}}/credentials/{provider}"] = {
            "put": {
                "operationId": f"put{name}Credential",
                "summary": f"Store or replace an app's {provider} credential, encrypted with "
                "NOTIFIER_SECRETS_KEY (admin key)",
                "description": _KEY_LOADS[provider]
                + " 503 when the API has no NOTIFIER_SECRETS_KEY.",
                "parameters": [_ADMIN_APP],
                "requestBody": _body(body),
                "responses": {
                    "200": _json(info, "Replaced: the new version"),
                    "201": _json(info, "Stored: the first version"),
                    **_errors(400, 403, 404, 408, 413, 415, 422, text=no_such),
                },
            },
            "get": {
                "operationId": f"get{name}Credential",
                "summary": f"An app's {provider} credential: fingerprint and ids, never the "
                "key (admin key)",
                "parameters": [_ADMIN_APP],
                "responses": {
                    "200": _json(info, "The credential"),
                    **_errors(403, 404, 422, text=no_such),
                },
            },
            "delete": {
                "operationId": f"delete{name}Credential",
                "summary": f"Delete an app's {provider} credential: it falls back to the "
                "environment's (admin key)",
                "parameters": [_ADMIN_APP],
                "responses": {
                    "204": {"description": "Deleted"},
                    **_errors(403, 404, 422, text=no_such),
                },
            },
        }
    return paths


def _ops_paths() -> dict[str, dict[str, Any]]:
    def plain(op_id: str, description: str, media: str = "application/json") -> dict[str, Any]:
        return {
            "get": {
                "operationId": op_id,
                "security": [],
                "responses": {"200": {"description": description, "content": {media: {}}}},
            }
        }

    ready = plain("ready", "Store and broker reachable")
    ready["get"]["responses"]["200"] = _json("Ready", "Store and broker reachable")
    ready["get"]["responses"]["503"] = _json("Problem", "Not ready", PROBLEM_TYPE)
    health = plain("health", "Alive (touches nothing)")
    health["get"]["responses"]["200"] = _json("Health", "Alive (touches nothing)")
    return {
        "/health": health,
        "/ready": ready,
        "/metrics": plain("metrics", "Prometheus text format", "text/plain"),
        "/openapi.json": plain("openapi", "This document"),
    }


def _capitalized(name: str) -> str:
    return name[:1].upper() + name[1:]


def _with_options(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """OPTIONS on every path (``api/routes_options.py``): 204 with ``Allow``, no key."""
    for path, item in paths.items():
        allow = ", ".join(sorted({*(m.upper() for m in item), "OPTIONS"}))
        names = re.findall(r"{(\w+)}", path)
        item["options"] = {
            "operationId": "options" + _capitalized(item[next(iter(item))]["operationId"]),
            "summary": f"The methods of this path: Allow: {allow}",
            # any value routes here: OPTIONS checks no parameter
            "parameters": [_param(n, "path", {"type": "string", "minLength": 1}) for n in names],
            "security": [],
            "responses": {
                "204": {
                    "description": "No body; the Allow header lists the methods",
                    "headers": {"Allow": {"required": True, "schema": {"const": allow}}},
                }
            },
        }
    return paths


def _without_nul(schema: Any) -> None:
    """Give every request string without a pattern of its own the no-NUL pattern: bodies
    holding NUL anywhere are 422 (``api/body.py``), and the schema says so."""
    if isinstance(schema, list):
        for item in schema:
            _without_nul(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and "pattern" not in schema and "format" not in schema:
        schema["pattern"] = NO_NUL_PATTERN
    names = schema.get("propertyNames")
    if isinstance(names, dict) and "pattern" not in names:
        names["pattern"] = NO_NUL_PATTERN
    for value in schema.values():
        _without_nul(value)


_INFO = (
    "Push notifications to FCM and APNs. Every error is application/problem+json. Two "
    "refusals come before any route and so are listed on no operation: what the HTTP "
    "parser refuses (400, a request target too long 414, header fields too long or too "
    "many 431) and, behind nginx, its own limits (429 per client address, 413, 502-504). "
    "OPTIONS on a path answers 204 with Allow and needs no key."
)


def openapi_document(app: web.Application | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (``app`` is accepted for symmetry, unused)."""
    _, defs = models_json_schema(
        [
            (m, "validation")
            for m in (NotificationRequest, BatchRequest, DeviceRequest, *ADMIN_REQUESTS)
        ],
        ref_template=_REF,
    )
    requests = defs.get("$defs", {})
    _without_nul(requests)
    schemas = {**requests, **_response_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "notifier", "version": "1.0.0", "description": _INFO},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _with_options(_paths()),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
