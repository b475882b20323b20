"""The pure mapping between the domain records and MongoDB documents (docs/design.md section 2).

No I/O here, so it is tested without a server (``tests/store/mongo/test_mapping.py``).
A field whose value is None is left out of the document: ``{"field": None}`` in a query
matches a missing field, and the unique ``(app, idempotency_key)`` index is partial on
``idempotency_key`` being a string, so a notification without a key must not carry one.
BSON keeps milliseconds: :func:`bson_time` is what a datetime becomes once stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from notifier.models import (
    Attempt,
    Device,
    Lane,
    LastError,
    Notification,
    Platform,
    Priority,
    Status,
    Target,
    Wake,
    as_utc,
)

# Optional notification fields: (attribute, document field). Absent from the document when None.
_OPTIONAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("user_id", "user_id"),
    ("title", "title"),
    ("body", "body"),
    ("collapse_key", "collapse_key"),
    ("apns_topic", "apns_topic"),
    ("ttl_seconds", "ttl_seconds"),
    ("scheduled_for", "scheduled_for"),
    ("next_attempt_at", "next_attempt_at"),
    ("locked_by", "lockedBy"),
    ("locked_at", "lockedAt"),
    ("lock_expiry", "lockExpiry"),
    ("published_at", "published_at"),
    ("sent_at", "sent_at"),
    ("provider_message_id", "provider_message_id"),
    ("idempotency_key", "idempotency_key"),
    ("request_fingerprint", "request_fingerprint"),
)


def bson_time(value: datetime) -> datetime:
    """``value`` as MongoDB gives it back: millisecond precision, aware UTC."""
    value = as_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _aware(value: Any) -> Any:
    """Stored datetimes as aware UTC, whatever the client's codec options were."""
    return as_utc(value) if isinstance(value, datetime) else value


def attempt_to_document(attempt: Attempt) -> dict[str, Any]:
    """A history entry; unlike top-level fields, its None values are kept (finished or not)."""
    return attempt.to_dict()


def last_error_to_document(error: LastError) -> dict[str, Any]:
    return error.to_dict()


def notification_to_document(n: Notification) -> dict[str, Any]:
    """The document stored for ``n``; ``_id`` is the UUIDv7 string."""
    doc: dict[str, Any] = {
        "_id": n.id,
        "app": n.app,
        "target": {"platform": n.target.platform.value, "token": n.target.token},
        "data": dict(n.data),
        "priority": n.priority.value,
        "lane": n.lane.value,
        "status": n.status.value,
        "attempts": n.attempts,
        "history": [attempt_to_document(a) for a in n.history],
        "created_at": n.created_at,
        "updated_at": n.updated_at,
    }
    if n.last_error is not None:
        doc["last_error"] = last_error_to_document(n.last_error)
    for attribute, field_name in _OPTIONAL_FIELDS:
        value = getattr(n, attribute)
        if value is not None:
            doc[field_name] = value
    return doc


def _attempt_from_document(d: Mapping[str, Any]) -> Attempt:
    return Attempt.from_dict(
        {**d, "started_at": _aware(d["started_at"]), "finished_at": _aware(d.get("finished_at"))}
    )


# The fields a sweeper read projects so that what it takes can be published to its queue.
WAKE_FIELDS = {"app": 1, "lane": 1}


def lane_of(doc: Mapping[str, Any]) -> Lane:
    """The document's lane; one stored before the lanes existed has none and is transactional."""
    return Lane(doc.get("lane", Lane.TRANSACTIONAL.value))


def wake_of(doc: Mapping[str, Any]) -> Wake:
    """A :class:`Wake` from a document read with (at least) ``WAKE_FIELDS``."""
    return Wake(doc["_id"], doc["app"], lane_of(doc))


def document_to_notification(doc: Mapping[str, Any]) -> Notification:
    """The :class:`Notification` a stored document stands for (missing fields are None)."""
    target = doc["target"]
    optional = {attr: _aware(doc.get(field_name)) for attr, field_name in _OPTIONAL_FIELDS}
    return Notification(
        id=doc["_id"],
        app=doc["app"],
        target=Target(platform=Platform(target["platform"]), token=target["token"]),
        created_at=_aware(doc["created_at"]),
        updated_at=_aware(doc["updated_at"]),
        data=dict(doc.get("data") or {}),
        priority=Priority(doc.get("priority", Priority.HIGH.value)),
        lane=lane_of(doc),
        status=Status(doc["status"]),
        attempts=int(doc.get("attempts", 0)),
        last_error=LastError.from_dict(doc.get("last_error")),
        history=[_attempt_from_document(a) for a in doc.get("history") or ()],
        **optional,
    )


def device_to_document(device: Device) -> dict[str, Any]:
    """A device document; unique per ``(app, token)``, its ``_id`` left to MongoDB."""
    doc: dict[str, Any] = {
        "app": device.app,
        "token": device.token,
        "platform": device.platform.value,
        "user_id": device.user_id,
        "active": device.active,
        "created_at": device.created_at,
        "updated_at": device.updated_at,
    }
    if device.deactivated_reason is not None:
        doc["deactivated_reason"] = device.deactivated_reason
    return doc


def document_to_device(doc: Mapping[str, Any]) -> Device:
    return Device(
        app=doc["app"],
        token=doc["token"],
        platform=Platform(doc["platform"]),
        user_id=doc.get("user_id"),
        active=bool(doc.get("active", True)),
        created_at=_aware(doc["created_at"]),
        updated_at=_aware(doc["updated_at"]),
        deactivated_reason=doc.get("deactivated_reason"),
    )
