"""Request models (pydantic v2): the rules a request body must keep (docs/design.md section 3).

Models are strict (no "3" for 3) and forbid unknown fields; every broken rule is reported at
once, each with its location. The same models feed the OpenAPI document.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from notifier.models import Platform, Priority, Status, utcnow

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 500
APNS_PAYLOAD_LIMIT = 4096
# 64 KiB cannot carry MAX_BATCH items, so the batch route has its own limit: 500 items of
# about APNS_PAYLOAD_LIMIT each (docs/design.md section 3 explains the 2 MiB).
MAX_BATCH_BODY_BYTES = 2 * 1024 * 1024
MAX_TTL_SECONDS = 2_419_200
MAX_SCHEDULE_AHEAD = timedelta(days=30)
# The earliest scheduled_for (any past time sends now): far from the ends of the calendar,
# where asyncpg turns 0001-01-01T00:00:00Z into -infinity (read back naive) and year 0
# cannot be encoded at all, by asyncpg or BSON.
SCHEDULE_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
SCHEDULE_RANGE = "must be at or after 1970-01-01T00:00:00Z once converted to UTC"
# Real FCM tokens are ~150-200 ASCII characters; 1,024 keeps every index entry small.
FCM_TOKEN_MAX = 1024
_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
_FCM_TOKEN = re.compile(r"^[\x21-\x7e]{1,1024}$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_RESERVED_DATA_KEYS = frozenset({"from", "gcm", "notification_id"})

# Tags of the `to` union: dropped from error locations so a pointer reads /to/token.
TARGET_TAGS = frozenset({"device", "user"})

Id = Annotated[str, Field(min_length=1, max_length=256)]
# Printable ASCII without "#": a user fan-out stores its documents' keys as f"{key}#{n}".
IDEMPOTENCY_KEY_PATTERN = r"^[\x21\x22\x24-\x7e]{1,200}$"
IdempotencyKey = Annotated[str, Field(pattern=IDEMPOTENCY_KEY_PATTERN)]


def check_token(platform: Platform, token: str) -> str:
    """Raise ValueError unless ``token`` is well-formed for ``platform``."""
    if platform is Platform.APNS:
        if not _APNS_TOKEN.match(token):
            raise ValueError("an APNs token is exactly 64 hexadecimal characters")
    elif len(token) > FCM_TOKEN_MAX or not _FCM_TOKEN.match(token):
        raise ValueError("an FCM token is 1..1024 printable ASCII characters")
    return token


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DeviceTarget(_Model):
    """One device: its platform and push token."""

    platform: Platform = Field(strict=False)
    token: str

    @field_validator("token")
    @classmethod
    def _token(cls, v: str, info: ValidationInfo) -> str:
        platform = info.data.get("platform")
        return check_token(platform, v) if isinstance(platform, Platform) else v


class UserTarget(_Model):
    """Every active device registered for this user of the app."""

    user_id: Id


def _target_tag(value: Any) -> str:
    if isinstance(value, dict) and "user_id" in value and "token" not in value:
        return "user"
    return "device"


Target = Annotated[
    Annotated[DeviceTarget, Tag("device")] | Annotated[UserTarget, Tag("user")],
    Discriminator(_target_tag),
]


def _parse_rfc3339(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-22T18:00:00Z")
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


def apns_payload_size(title: str | None, body: str | None, data: dict[str, str]) -> int:
    """Bytes of the APNs JSON payload the provider client builds (docs/design.md section 4)."""
    if title is None and body is None:
        aps: dict[str, Any] = {"content-available": 1}
    else:
        alert = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        aps = {"alert": alert}
    return len(orjson.dumps({"aps": aps, **data}))


class NotificationRequest(_Model):
    """``POST /v1/notifications``: one notification to a device or to a user's devices."""

    to: Target
    user_id: Id | None = None
    title: str | None = Field(default=None, max_length=APNS_PAYLOAD_LIMIT)
    body: str | None = Field(default=None, max_length=APNS_PAYLOAD_LIMIT)
    data: dict[str, str] = Field(default_factory=dict, max_length=256)
    priority: Priority = Field(default=Priority.HIGH, strict=False)
    ttl_seconds: int | None = Field(default=None, ge=0, le=MAX_TTL_SECONDS)
    collapse_key: str | None = Field(default=None, min_length=1, max_length=64)
    scheduled_for: datetime | None = Field(
        default=None,
        strict=False,
        description=(
            "RFC 3339 with an offset; once in UTC, at or after 1970-01-01T00:00:00Z and at"
            " most 30 days ahead; in the past = now."
        ),
    )

    @field_validator("scheduled_for", mode="before")
    @classmethod
    def _scheduled_rfc3339(cls, v: Any) -> Any:
        return None if v is None else _parse_rfc3339(v)

    @field_validator("scheduled_for")
    @classmethod
    def _scheduled_window(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        if v.tzinfo is None:
            raise ValueError("must carry a UTC offset")
        # The range is checked in UTC, the form both stores keep: 0001-01-01T00:00:00+01:00
        # is a year-0 instant that neither PostgreSQL's driver nor BSON can encode.
        try:
            v = v.astimezone(UTC)
        except OverflowError:
            raise ValueError(SCHEDULE_RANGE) from None
        if v < SCHEDULE_EARLIEST:
            raise ValueError(SCHEDULE_RANGE)
        if v - utcnow() > MAX_SCHEDULE_AHEAD:
            raise ValueError("must be at most 30 days ahead")
        return v

    @field_validator("collapse_key")
    @classmethod
    def _collapse_bytes(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode()) > 64:
            raise ValueError("must be at most 64 bytes (UTF-8)")
        return v

    @field_validator("data")
    @classmethod
    def _data_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key:
                raise ValueError("keys must not be empty")
            if key in _RESERVED_DATA_KEYS or key.startswith("google"):
                raise ValueError(f"key {key!r} is reserved by FCM")
        return v

    @model_validator(mode="after")
    def _content(self) -> NotificationRequest:
        if self.title is None and self.body is None and not self.data:
            raise ValueError("give a title, a body or data")
        size = apns_payload_size(self.title, self.body, self.data)
        if size > APNS_PAYLOAD_LIMIT:
            raise ValueError(
                f"title, body and data make a {size}-byte push payload; the limit is "
                f"{APNS_PAYLOAD_LIMIT} bytes"
            )
        return self


class BatchItem(NotificationRequest):
    """One item of a batch: a notification plus its own optional idempotency key."""

    idempotency_key: IdempotencyKey | None = None


class BatchRequest(_Model):
    """``POST /v1/notifications/batch`` as documented (items are validated one by one)."""

    notifications: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class BatchEnvelope(_Model):
    """The batch envelope as parsed first: items stay raw so each fails on its own."""

    notifications: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class DeviceRequest(_Model):
    """``PUT /v1/devices/{token}``: register or refresh a device."""

    platform: Platform = Field(strict=False)
    user_id: Id | None = None


class ListQuery(_Model):
    """Query of ``GET /v1/notifications``."""

    model_config = ConfigDict(strict=False, extra="ignore", frozen=True)

    user_id: Id | None = None
    status: Status | None = None
    limit: int = Field(default=50, ge=1, le=100)
    after: str | None = Field(default=None, min_length=1, max_length=64)
