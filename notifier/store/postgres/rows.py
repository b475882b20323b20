"""Mapping between PostgreSQL rows and the domain records of :mod:`notifier.models`.

jsonb columns are decoded by the connection's orjson codec; datetimes inside ``history``
are stored as ISO 8601 strings and come back as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

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
from notifier.store.base import Outcome


def storable(*values: str | None) -> bool:
    """Whether PostgreSQL text can hold every value (no NUL character, no lone surrogate)."""
    for value in values:
        if value is None:
            continue
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


def check_storable(n: Notification) -> None:
    """Raise ValueError when a notification holds text PostgreSQL cannot store."""
    texts = (n.id, n.app, n.user_id, n.target.token, n.title, n.body, n.collapse_key, n.apns_topic)
    extra = (n.idempotency_key, n.request_fingerprint)
    if not storable(*texts, *extra, *n.data.keys(), *n.data.values()):
        raise ValueError(
            f"notification {n.id!r}: text with a NUL character or a lone surrogate cannot be stored"
        )


def dumps(value: Any) -> str:
    """JSON text for a jsonb parameter (aware datetimes become ISO 8601 strings)."""
    return orjson.dumps(value).decode()


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def attempt_from_json(d: Mapping[str, Any]) -> Attempt:
    started = _parse_time(d["started_at"])
    if started is None:
        raise ValueError("an attempt without started_at")
    return Attempt.from_dict(
        {**d, "started_at": started, "finished_at": _parse_time(d.get("finished_at"))}
    )


def notification_from_row(row: Mapping[str, Any]) -> Notification:
    """A :class:`Notification` from a ``SELECT *`` row of ``notifications``."""
    return Notification(
        id=row["id"],
        app=row["app"],
        target=Target(platform=Platform(row["target_platform"]), token=row["target_token"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        user_id=row["user_id"],
        title=row["title"],
        body=row["body"],
        data=row["data"] or {},
        priority=Priority(row["priority"]),
        lane=Lane(row["lane"]),
        collapse_key=row["collapse_key"],
        apns_topic=row["apns_topic"],
        ttl_seconds=row["ttl_seconds"],
        status=Status(row["status"]),
        scheduled_for=row["scheduled_for"],
        next_attempt_at=row["next_attempt_at"],
        attempts=row["attempts"],
        last_error=LastError.from_dict(row["last_error"]),
        locked_by=row["locked_by"],
        locked_at=row["locked_at"],
        lock_expiry=row["lock_expiry"],
        published_at=row["published_at"],
        sent_at=row["sent_at"],
        provider_message_id=row["provider_message_id"],
        idempotency_key=row["idempotency_key"],
        request_fingerprint=row["request_fingerprint"],
        history=[attempt_from_json(a) for a in row["history"] or ()],
    )


def wake_from_row(row: Mapping[str, Any]) -> Wake:
    """A :class:`Wake` from a row with ``id``, ``app`` and ``lane`` (a sweeper RETURNING)."""
    return Wake(row["id"], row["app"], Lane(row["lane"]))


def insert_columns(notifications: Sequence[Notification]) -> list[list[Any]]:
    """Column arrays for ``INSERT ... SELECT FROM unnest(...)`` (order of INSERT_COLUMNS)."""
    rows = [
        (
            n.id,
            n.app,
            n.user_id,
            n.target.platform.value,
            n.target.token,
            n.title,
            n.body,
            dumps(n.data or {}),
            n.priority.value,
            n.lane.value,
            n.collapse_key,
            n.ttl_seconds,
            n.status.value,
            n.scheduled_for,
            n.next_attempt_at,
            n.attempts,
            dumps(n.last_error.to_dict()) if n.last_error else None,
            n.published_at,
            n.idempotency_key,
            n.request_fingerprint,
            dumps([a.to_dict() for a in n.history]),
            n.created_at,
            n.updated_at,
            n.apns_topic,
        )
        for n in notifications
    ]
    return [list(column) for column in zip(*rows, strict=True)]


def outcome_columns(items: Sequence[tuple[str, Outcome]]) -> list[list[Any]]:
    """Column arrays for COMPLETE_MANY: id, status, finished_at, message id, next, error, finish."""
    rows = [
        (
            id,
            o.status.value,
            o.finished_at,
            o.provider_message_id,
            o.next_attempt_at,
            dumps(o.last_error.to_dict()) if o.last_error else None,
            dumps(
                {
                    "finished_at": o.finished_at,
                    "outcome": o.attempt_outcome.value,
                    "provider_status": o.provider_status,
                }
            ),
        )
        for id, o in items
    ]
    return [list(column) for column in zip(*rows, strict=True)]


def device_from_row(row: Mapping[str, Any]) -> Device:
    return Device(
        app=row["app"],
        token=row["token"],
        platform=Platform(row["platform"]),
        user_id=row["user_id"],
        active=row["active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deactivated_reason=row["deactivated_reason"],
    )
