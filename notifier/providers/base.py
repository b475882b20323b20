"""The provider protocol and its single outcome type (docs/design.md section 4).

Every provider answer maps to one :class:`PushResult`: sent, retry later (optionally not
before ``retry_after_seconds``), token dead, or permanent failure. Expected answers are
values, not exceptions; a provider client raises only on programming errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from notifier.models import Notification, Platform


class PushOutcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # transient: 5xx, 429, timeouts, connection errors, our expired auth
    TOKEN_DEAD = "token_dead"  # deactivate the device, never retry
    PERMANENT = "permanent"  # this notification can never be delivered as is


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: PushOutcome
    provider_status: int | None = None  # HTTP status, None when no answer came
    message_id: str | None = None  # FCM message name / APNs apns-id echoed
    retry_after_seconds: float | None = None  # the provider's Retry-After, when given
    code: str | None = None  # enumerated reason: APNs reason, FCM errorCode, "timeout"...
    message: str | None = None  # human text; never holds a token or a secret
    token_invalid_since: datetime | None = None  # APNs 410 timestamp

    @property
    def sent(self) -> bool:
        return self.outcome is PushOutcome.SENT


class Provider(Protocol):
    """One push service client; safe to call ``send`` concurrently from many tasks."""

    platform: Platform

    async def send(self, notification: Notification) -> PushResult: ...

    async def close(self) -> None: ...
