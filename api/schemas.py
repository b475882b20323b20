"""Request models (pydantic v2): the rules a request body must keep (docs/design.md section 3).

Models are strict (no "3" for 3) and forbid unknown fields; every broken rule is reported at
once, each with its location. The same models feed the OpenAPI document.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from notifier.credentials.model import TOPIC_PATTERN
from notifier.models import Lane, Platform, Priority, Status, utcnow
from notifier.providers.spec import SPECS, Content, PlatformSpec, spec_for

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 500
# The smallest provider payload limit: no title or body alone may pass it.
PAYLOAD_LIMIT = min(spec.payload_limit for spec in SPECS.values())
# 64 KiB cannot carry MAX_BATCH items, so the batch route has its own limit: 500 items of
# about PAYLOAD_LIMIT each (docs/design.md section 3 explains the 2 MiB).
MAX_BATCH_BODY_BYTES = 2 * 1024 * 1024
MAX_TTL_SECONDS = 2_419_200
MAX_SCHEDULE_AHEAD = timedelta(days=30)
# The earliest scheduled_for (any past time sends now): far from the ends of the calendar,
# where asyncpg turns 0001-01-01T00:00:00Z into -infinity (read back naive) and year 0
# cannot be encoded at all, by asyncpg or BSON.
SCHEDULE_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
SCHEDULE_RANGE = "must be at or after 1970-01-01T00:00:00Z once converted to UTC"
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)

LANE_TEXT = (
    "The work queue: transactional (someone is waiting: login codes, payments, chat; "
    "workers keep capacity for it) or bulk (campaigns, digests; shared fairly between "
    "apps). A single request defaults to transactional, a batch item to bulk. Unrelated "
    "to priority, which is the provider's."
)

# Tags of the `to` union: dropped from error locations so a pointer reads /to/token.
TARGET_TAGS = frozenset({"device", "user"})

# No stored string may hold NUL (PostgreSQL text cannot); bodies are checked in api/body.py.
NO_NUL_PATTERN = r"^[^\x00]*$"
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL_PATTERN)]
ApnsTopic = Annotated[str, Field(pattern=TOPIC_PATTERN)]
# Printable ASCII without "#": a user fan-out stores its documents' keys as f"{key}#{n}".
IDEMPOTENCY_KEY_PATTERN = r"^[\x21\x22\x24-\x7e]{1,200}$"
IdempotencyKey = Annotated[str, Field(pattern=IDEMPOTENCY_KEY_PATTERN)]


def check_token(platform: Platform, token: str) -> str:
    """Raise ValueError unless ``token`` is well-formed for ``platform``."""
    spec = spec_for(platform)
    if not spec.token_ok(token):
        raise ValueError(spec.token_rule)
    return token


def any_token_pattern() -> str:
    """A pattern every platform's well-formed token matches (for a path parameter)."""
    bodies = (spec.token_pattern.removeprefix("^").removesuffix("$") for spec in SPECS.values())
    return "^(?:" + "|".join(bodies) + ")$"


def _check_collapse_key(value: str) -> str:
    for spec in SPECS.values():
        if not spec.collapse_ok(value):
            raise ValueError(f"must suit {spec.collapse_rule}")
    return value


def _collapse_key_schema() -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    patterns = [s.collapse_pattern for s in SPECS.values() if s.collapse_pattern is not None]
    if len(patterns) == 1:
        schema["pattern"] = patterns[0]
    elif patterns:
        schema["allOf"] = [{"pattern": p} for p in patterns]
    rules = "; ".join(s.collapse_rule for s in SPECS.values() if s.collapse_rule)
    schema["description"] = f"Sent to every provider as its collapse id: {rules}."
    return schema


CollapseKey = Annotated[
    str,
    Field(min_length=1),
    AfterValidator(_check_collapse_key),
    WithJsonSchema(_collapse_key_schema()),
]


def _any_case(word: str) -> str:
    """``gcm`` -> ``[gG][cC][mM]``: ECMA 262 patterns have no inline case flag."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _refused_keys_pattern() -> str:
    """One pattern matching every data key some provider refuses (JSON Schema side of
    ``PlatformSpec.data_key_ok``)."""
    words = sorted({k for s in SPECS.values() for k in s.reserved_keys})
    prefixes = sorted({p for s in SPECS.values() for p in s.reserved_prefixes})
    ours = sorted({k for s in SPECS.values() for k in s.client_keys})
    parts = [f"^{_any_case(w)}$" for w in words] + [f"^{_any_case(p)}" for p in prefixes]
    parts += [f"^{re.escape(k)}$" for k in ours]
    return "|".join(parts)


# One search per key instead of every spec's checks (~2.7 us -> ~0.3 us for two keys).
_REFUSED_KEY = re.compile(_refused_keys_pattern())


def _data_schema() -> dict[str, Any]:
    refused = ", ".join(
        f"{s.platform.value}: " + ", ".join([*sorted(s.reserved_keys | s.client_keys), *prefixed])
        for s in SPECS.values()
        for prefixed in ([f"{p}*" for p in s.reserved_prefixes],)
    )
    return {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "maxProperties": 256,
        "propertyNames": {"minLength": 1, "not": {"pattern": _refused_keys_pattern()}},
        "description": f"Flat string map. Refused keys, compared without case ({refused}).",
    }


def payload_rules_text() -> str:
    """The payload limits in words: JSON Schema cannot state a sum of byte lengths."""
    rules = "; ".join(spec.payload_rule for spec in SPECS.values())
    return (
        "Title, body and data must fit every provider's payload limit, as each measures it: "
        f"{rules}. JSON Schema cannot express these sums: a request past one is 422 "
        "(pointer /) naming the provider and the size."
    )


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _device_target_schema(schema: dict[str, Any]) -> None:
    """Each platform's token rule, from the provider table."""
    schema["oneOf"] = [
        {
            "properties": {
                "platform": {"const": spec.platform.value},
                "token": {"pattern": spec.token_pattern, "description": spec.token_rule},
            }
        }
        for spec in SPECS.values()
    ]


class DeviceTarget(_Model):
    """One device: its platform and push token."""

    model_config = ConfigDict(json_schema_extra=_device_target_schema)

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


def _whole_number(value: Any) -> Any:
    """3600.0 is the integer 3600 to JSON Schema, so it is to us; "3600" stays refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


TtlSeconds = Annotated[int, Field(ge=0, le=MAX_TTL_SECONDS), BeforeValidator(_whole_number)]

# "give a title, a body or data" as JSON Schema: one of them present and not empty/null
_SOME_CONTENT: list[JsonValue] = [
    {"required": ["title"], "properties": {"title": {"type": "string"}}},
    {"required": ["body"], "properties": {"body": {"type": "string"}}},
    {"required": ["data"], "properties": {"data": {"minProperties": 1}}},
]


def _check_payload(spec: PlatformSpec, content: Content) -> None:
    size = spec.payload_size(content)
    if size > spec.payload_limit:
        raise ValueError(
            f"title, body and data make a {size}-byte {spec.platform.value} payload; "
            f"the limit is {spec.payload_limit} bytes ({spec.payload_rule})"
        )


class NotificationRequest(_Model):
    """``POST /v1/notifications``: one notification to a device or to a user's devices."""

    model_config = ConfigDict(
        json_schema_extra={"description": payload_rules_text(), "anyOf": _SOME_CONTENT}
    )

    to: Target
    user_id: Id | None = None
    title: str | None = Field(default=None, max_length=PAYLOAD_LIMIT)
    body: str | None = Field(default=None, max_length=PAYLOAD_LIMIT)
    data: Annotated[dict[str, str], WithJsonSchema(_data_schema())] = Field(
        default_factory=dict, max_length=256
    )
    priority: Priority = Field(default=Priority.HIGH, strict=False)
    lane: Lane = Field(default=Lane.TRANSACTIONAL, strict=False, description=LANE_TEXT)
    ttl_seconds: TtlSeconds | None = None
    collapse_key: CollapseKey | None = None
    apns_topic: ApnsTopic | None = Field(
        default=None,
        description=(
            "The APNs topic (bundle id) to push under, one of the app's allowed topics "
            "(its APNs credential's, else the deployment's NOTIFIER_APNS_TOPIC): any other "
            "is 422. Absent: the credential's first topic. Ignored for FCM devices."
        ),
    )
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

    @field_validator("data")
    @classmethod
    def _data_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key:
                raise ValueError("keys must not be empty")
            if _REFUSED_KEY.search(key):  # a candidate: the specs decide (and name who)
                for spec in SPECS.values():
                    if not spec.data_key_ok(key):
                        raise ValueError(f"key {key!r} is reserved for {spec.platform.value}")
        return v

    @model_validator(mode="after")
    def _content(self) -> NotificationRequest:
        if self.title is None and self.body is None and not self.data:
            raise ValueError("give a title, a body or data")
        for spec in SPECS.values():
            _check_payload(spec, self)
        return self


class BatchItem(NotificationRequest):
    """One item of a batch: a notification plus its own optional idempotency key."""

    idempotency_key: IdempotencyKey | None = None
    # A batch is most often a campaign: its items default to the bulk lane.
    lane: Lane = Field(default=Lane.BULK, strict=False, description=LANE_TEXT)


class BatchRequest(_Model):
    """``POST /v1/notifications/batch`` as documented (items are validated one by one)."""

    notifications: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class BatchEnvelope(_Model):
    """The batch envelope as parsed first: items stay raw objects so each fails on its own
    (an item that is not an object fails the envelope: 422 naming it)."""

    notifications: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


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
    after: str | None = Field(default=None, min_length=1, max_length=64, pattern=NO_NUL_PATTERN)
