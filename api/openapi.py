"""The OpenAPI 3.1 document: request schemas from the pydantic models, answers by hand.

``tests/api/test_openapi.py`` walks the router and fails when a route and this document
disagree, so a new handler cannot ship undocumented.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from api.body import size_text
from api.problems import PROBLEM_TYPE
from api.schemas import (
    MAX_BATCH_BODY_BYTES,
    MAX_BODY_BYTES,
    BatchRequest,
    DeviceRequest,
    NotificationRequest,
)

_REF = "#/components/schemas/{model}"
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_STATUSES = ["pending", "scheduled", "sent", "retrying", "failed", "cancelled", "expired"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
    }


_FIELD_ERROR = _obj(
    {
        "pointer": {"type": "string"},
        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
        "message": {"type": "string"},
    }
)
_PROBLEM = _obj(
    {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": _ref("FieldError")},
    },
    ["type", "title", "status", "detail"],
)
_ACCEPTED_ONE = _obj({"id": {"type": "string"}, "status": {"enum": ["pending", "scheduled"]}})
_ACCEPTED_MANY = _obj(
    {
        "ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "status": {"enum": ["pending", "scheduled"]},
    }
)
_ATTEMPT = _obj(
    {
        "worker": {"type": "string"},
        "started_at": {"type": "string", "format": "date-time"},
        "finished_at": _NULLABLE_TIME,
        "outcome": _NULLABLE_STR,
        "provider_status": {"type": ["integer", "null"]},
    }
)
_NOTIFICATION = _obj(
    {
        "id": {"type": "string"},
        "user_id": _NULLABLE_STR,
        "target": _obj({"platform": {"enum": ["fcm", "apns"]}, "token": {"type": "string"}}),
        "title": _NULLABLE_STR,
        "body": _NULLABLE_STR,
        "data": {"type": "object", "additionalProperties": {"type": "string"}},
        "priority": {"enum": ["high", "normal"]},
        "ttl_seconds": {"type": ["integer", "null"]},
        "collapse_key": _NULLABLE_STR,
        "status": {"enum": _STATUSES},
        "scheduled_for": _NULLABLE_TIME,
        "attempts": {"type": "integer", "minimum": 0},
        "history": {"type": "array", "items": _ref("Attempt")},
        "last_error": {
            "oneOf": [
                {"type": "null"},
                _obj(
                    {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "provider_status": {"type": ["integer", "null"]},
                    }
                ),
            ]
        },
        "sent_at": _NULLABLE_TIME,
        "provider_message_id": _NULLABLE_STR,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    }
)
_DEVICE = _obj(
    {
        "token": {"type": "string"},
        "user_id": _NULLABLE_STR,
        "platform": {"enum": ["fcm", "apns"]},
        "active": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    }
)
_RESPONSE_SCHEMAS = {
    "Problem": _PROBLEM,
    "FieldError": _FIELD_ERROR,
    "Accepted": {"oneOf": [_ACCEPTED_ONE, _ACCEPTED_MANY]},
    "BatchResults": _obj(
        {
            "results": {
                "type": "array",
                "items": {
                    "oneOf": [_ACCEPTED_ONE, _ACCEPTED_MANY, _obj({"error": _ref("Problem")})]
                },
            }
        }
    ),
    "Attempt": _ATTEMPT,
    "Notification": _NOTIFICATION,
    "NotificationPage": _obj(
        {"items": {"type": "array", "items": _ref("Notification")}, "next": _NULLABLE_STR}
    ),
    "Device": _DEVICE,
    "DeviceList": _obj({"items": {"type": "array", "items": _ref("Device")}}),
}

_ERROR_TEXT = {
    400: "Malformed JSON",
    401: "Missing or unknown API key",
    404: "Not found (or another app's)",
    409: "Conflict",
    413: f"Body larger than {size_text(MAX_BODY_BYTES)}",
    415: "Body is not application/json",
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
    "to": {"platform": "apns", "token": "a1" * 32},
    "title": "Hi",
    "body": "text",
    "data": {"k": "v"},
    "priority": "high",
    "ttl_seconds": 3600,
    "collapse_key": "c1",
}
_EXAMPLES = {
    "NotificationRequest": _EXAMPLE,
    "BatchRequest": {
        "notifications": [
            _EXAMPLE,
            {"to": {"platform": "fcm", "token": "fcm-token"}, "data": {"k": "v"}},
        ]
    },
    "DeviceRequest": {"user_id": "u1", "platform": "fcm"},
}


def _body(schema_name: str) -> dict[str, Any]:
    media = {"schema": _ref(schema_name), "example": _EXAMPLES[schema_name]}
    return {"required": True, "content": {"application/json": media}}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


_ID = _param("id", "path", {"type": "string"})
_TOKEN = _param("token", "path", {"type": "string"})
_IDEMPOTENCY = _param(
    "Idempotency-Key", "header", {"type": "string", "pattern": r"^[!\"$-~]{1,200}$"}, False
)


def _paths() -> dict[str, dict[str, Any]]:
    accepted = _json("Accepted", "Accepted: stored and queued (or scheduled)")
    replay = _json("Accepted", "Idempotent replay: the first answer, nothing created")
    write_errors = (400, 413, 415, 422)
    return {
        "/v1/notifications": {
            "post": {
                "operationId": "createNotification",
                "summary": "Send one notification (to a device, or to every active device of "
                "a user; a user without an active device is 422)",
                "parameters": [_IDEMPOTENCY],
                "requestBody": _body("NotificationRequest"),
                "responses": {"202": accepted, "200": replay, **_errors(*write_errors, 409)},
            },
            "get": {
                "operationId": "listNotifications",
                "summary": "Cursor-paged list, newest first",
                "parameters": [
                    _param("user_id", "query", {"type": "string"}, False),
                    _param("status", "query", {"enum": _STATUSES}, False),
                    _param(
                        "limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, False
                    ),
                    _param("after", "query", {"type": "string"}, False),
                ],
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
                "parameters": [_TOKEN],
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
                "parameters": [_param("user_id", "path", {"type": "string"})],
                "responses": {"200": _json("DeviceList", "The user's devices"), **_errors(422)},
            }
        },
        **_ops_paths(),
    }


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
    ready["get"]["responses"]["503"] = _json("Problem", "Not ready", PROBLEM_TYPE)
    return {
        "/health": plain("health", "Alive (touches nothing)"),
        "/ready": ready,
        "/metrics": plain("metrics", "Prometheus text format", "text/plain"),
        "/openapi.json": plain("openapi", "This document"),
    }


def openapi_document(app: web.Application | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (``app`` is accepted for symmetry, unused)."""
    _, defs = models_json_schema(
        [(m, "validation") for m in (NotificationRequest, BatchRequest, DeviceRequest)],
        ref_template=_REF,
    )
    schemas = {**defs.get("$defs", {}), **_RESPONSE_SCHEMAS}
    return {
        "openapi": "3.1.0",
        "info": {"title": "notifier", "version": "1.0.0"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
