"""The JSON shapes the API answers with, written once (docs/design.md section 3).

The views build these TypedDicts (so mypy checks every answer's keys and types) and the
OpenAPI document renders them with pydantic's ``TypeAdapter``: a field added here shows
in both, and an answer cannot drift from its schema. Plain dicts at run time: no model
is built on the hot path. Names are the OpenAPI component names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, WithJsonSchema, with_config
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from notifier.models import AttemptOutcome, Lane, Platform, Priority, Status

DateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
AcceptedStatus = Literal[Status.PENDING, Status.SCHEDULED]
_EXACT = ConfigDict(extra="forbid")


@with_config(_EXACT)
class FieldError(TypedDict):
    """One broken rule: where (a JSON pointer and the same as a list) and why."""

    pointer: str
    loc: list[str | int]
    message: str


@with_config(_EXACT)
class Problem(TypedDict):
    """RFC 9457 problem details; ``errors`` lists every invalid field of a 422."""

    type: str
    title: str
    status: int
    detail: str
    errors: NotRequired[list[FieldError]]


@with_config(_EXACT)
class AcceptedOne(TypedDict):
    id: str
    status: AcceptedStatus
    lane: Lane


@with_config(_EXACT)
class AcceptedMany(TypedDict):
    """A fan-out to a user's devices: one id per device."""

    ids: Annotated[list[str], Field(min_length=1)]
    status: AcceptedStatus
    lane: Lane


Accepted = AcceptedOne | AcceptedMany


@with_config(_EXACT)
class BatchError(TypedDict):
    error: Problem


@with_config(_EXACT)
class BatchResults(TypedDict):
    """One result per item, in input order."""

    results: list[AcceptedOne | AcceptedMany | BatchError]


@with_config(_EXACT)
class Attempt(TypedDict):
    worker: str
    started_at: DateTime
    finished_at: DateTime | None
    outcome: AttemptOutcome | None
    provider_status: int | None


@with_config(_EXACT)
class LastError(TypedDict):
    code: str
    message: str
    provider_status: int | None


@with_config(_EXACT)
class Target(TypedDict):
    platform: Platform
    token: str


@with_config(_EXACT)
class Notification(TypedDict):
    id: str
    user_id: str | None
    target: Target
    title: str | None
    body: str | None
    data: dict[str, str]
    priority: Priority
    lane: Lane
    ttl_seconds: int | None
    collapse_key: str | None
    apns_topic: str | None
    status: Status
    scheduled_for: DateTime | None
    attempts: Annotated[int, Field(ge=0)]
    history: list[Attempt]
    last_error: LastError | None
    sent_at: DateTime | None
    provider_message_id: str | None
    created_at: DateTime
    updated_at: DateTime


@with_config(_EXACT)
class NotificationPage(TypedDict):
    """Newest first; ``next`` is the ``after`` of the next page, null on the last."""

    items: list[Notification]
    next: str | None


@with_config(_EXACT)
class Device(TypedDict):
    token: str
    user_id: str | None
    platform: Platform
    active: bool
    created_at: DateTime
    updated_at: DateTime


@with_config(_EXACT)
class DeviceList(TypedDict):
    items: list[Device]


@with_config(_EXACT)
class Health(TypedDict):
    status: Literal["ok"]


@with_config(_EXACT)
class ReadyChecks(TypedDict):
    store: Literal["ok"]
    broker: Literal["ok"]


@with_config(_EXACT)
class Ready(TypedDict):
    status: Literal["ready"]
    checks: ReadyChecks


@with_config(_EXACT)
class CredentialHealth(TypedDict):
    """One provider's credential for the calling app, as the workers last reported it."""

    provider: Platform
    # true: the app's own stored credential; false: the environment's default
    own: bool
    # null: no worker has pushed with it since it was set (or ever)
    healthy: bool | None
    changed_at: DateTime | None
    code: str | None  # the refusal's code while unhealthy (config_error ...)


@with_config(_EXACT)
class CredentialHealthList(TypedDict):
    app: str
    credentials: list[CredentialHealth]


# Every JSON body a route answers with (problems aside): ``api.views.json_response`` takes
# only these, so no answer goes out in a shape the OpenAPI document does not describe.
Answer = (
    AcceptedOne
    | AcceptedMany
    | BatchResults
    | Notification
    | NotificationPage
    | Device
    | DeviceList
    | Health
    | Ready
    | CredentialHealthList
)

# component name -> shape, for the OpenAPI document
SHAPES: dict[str, Any] = {
    "Problem": Problem,
    "FieldError": FieldError,
    "Accepted": Accepted,
    "BatchResults": BatchResults,
    "Notification": Notification,
    "NotificationPage": NotificationPage,
    "Device": Device,
    "DeviceList": DeviceList,
    "Health": Health,
    "Ready": Ready,
    "CredentialHealth": CredentialHealth,
    "CredentialHealthList": CredentialHealthList,
}
