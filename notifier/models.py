"""The domain records: a notification (one per device delivery), its attempts, a device.

Field names follow docs/design.md section 2. Stores map these dataclasses to documents
(MongoDB) or rows (PostgreSQL); the API maps them to JSON. Times are aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import uuid_utils


class Platform(StrEnum):
    FCM = "fcm"
    APNS = "apns"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"


class Lane(StrEnum):
    """Which work queue carries a notification (docs/design.md section 1, lanes).

    ``transactional``: a person is waiting (login codes, payments, chat); workers keep slots
    for it that bulk work never takes. ``bulk``: campaigns and digests; each app has its own
    bulk queue, and workers share their bulk slots between apps in turn."""

    TRANSACTIONAL = "transactional"
    BULK = "bulk"


class Status(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.SENT, Status.FAILED, Status.CANCELLED, Status.EXPIRED})
OPEN_STATUSES = frozenset({Status.PENDING, Status.SCHEDULED, Status.RETRYING})


class AttemptOutcome(StrEnum):
    """How one push attempt ended, as recorded in a notification's history."""

    SENT = "sent"
    RETRY = "retry"
    TOKEN_DEAD = "token_dead"
    PERMANENT = "permanent"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # the worker died after it started the push: it may or may not have landed


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be in UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    """A UUIDv7 in canonical text form: sortable by creation time, usable as ``apns-id``."""
    return str(uuid_utils.uuid7())


def id_floor(moment: datetime) -> str:
    """The smallest UUIDv7 text of ``moment``'s millisecond: every id made earlier sorts below
    it (byte order), every id made at or after it sorts at or above it."""
    ms = int(as_utc(moment).timestamp() * 1000)
    digits = f"{max(0, ms):012x}"
    return f"{digits[:8]}-{digits[8:]}-7000-8000-000000000000"


def token_hint(token: str) -> str:
    """A short, stable stand-in for a device token in logs: never the token itself."""
    digest = hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"{token[:6]}…#{digest}"


@dataclass(frozen=True, slots=True)
class Target:
    platform: Platform
    token: str


@dataclass(frozen=True, slots=True)
class Wake:
    """What a publish needs of a notification: its id, and the queue it goes to, which its
    lane and (for the bulk lane) its app name (``notifier.broker.queue_for``)."""

    id: str
    app: str
    lane: Lane


@dataclass(slots=True)
class Attempt:
    """One push attempt: written with ``started_at`` at claim, finished with the outcome."""

    worker: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: AttemptOutcome | None = None
    provider_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome.value if self.outcome else None,
            "provider_status": self.provider_status,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        return cls(
            worker=d["worker"],
            started_at=d["started_at"],
            finished_at=d.get("finished_at"),
            outcome=AttemptOutcome(d["outcome"]) if d.get("outcome") else None,
            provider_status=d.get("provider_status"),
        )


@dataclass(slots=True)
class LastError:
    code: str
    message: str
    provider_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "provider_status": self.provider_status}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LastError | None:
        if not d:
            return None
        return cls(code=d["code"], message=d["message"], provider_status=d.get("provider_status"))


@dataclass(slots=True)
class Notification:
    """One delivery to one device. ``id`` is a UUIDv7 string."""

    id: str
    app: str
    target: Target
    created_at: datetime
    updated_at: datetime
    user_id: str | None = None
    title: str | None = None
    body: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    priority: Priority = Priority.HIGH
    lane: Lane = Lane.TRANSACTIONAL
    collapse_key: str | None = None
    apns_topic: str | None = None  # None: the credential's first topic (issue 16)
    ttl_seconds: int | None = None
    status: Status = Status.PENDING
    scheduled_for: datetime | None = None
    next_attempt_at: datetime | None = None
    attempts: int = 0
    last_error: LastError | None = None
    locked_by: str | None = None
    locked_at: datetime | None = None
    lock_expiry: datetime | None = None
    published_at: datetime | None = None
    sent_at: datetime | None = None
    provider_message_id: str | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    history: list[Attempt] = field(default_factory=list)

    @property
    def expires_at(self) -> datetime | None:
        """When the provider would drop it anyway: creation time + ``ttl_seconds``."""
        if self.ttl_seconds is None:
            return None
        from datetime import timedelta

        return self.created_at + timedelta(seconds=self.ttl_seconds)

    @property
    def wake(self) -> Wake:
        return Wake(self.id, self.app, self.lane)

    @property
    def is_data_only(self) -> bool:
        return self.title is None and self.body is None


@dataclass(slots=True)
class Device:
    app: str
    token: str
    platform: Platform
    user_id: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    deactivated_reason: str | None = None
