"""Delivery policy: what a provider's answer (or a passed TTL) means for a claimed notification.

Pure: a :class:`Decision` says what to store and which follow-ups to run (deactivate the
device, dead-letter the id); :mod:`notifier.delivery` carries them out. Retry timing is
:mod:`notifier.retry`'s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from notifier.models import AttemptOutcome, LastError, Notification, Status
from notifier.providers.base import PushOutcome, PushResult
from notifier.providers.health import BUSY, HOLD_CODES
from notifier.retry import next_attempt_at
from notifier.settings import Settings
from notifier.store.base import Outcome


class DeliveryResult(StrEnum):
    """What one broker message led to, for the caller's counters."""

    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"  # claim missed: acked and dropped
    LOCK_LOST = "lock_lost"  # the outcome write found another holder (our lock had expired)


RESULT_BY_STATUS = {
    Status.SENT: DeliveryResult.SENT,
    Status.RETRYING: DeliveryResult.RETRYING,
    Status.FAILED: DeliveryResult.FAILED,
    Status.EXPIRED: DeliveryResult.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome to store and the follow-up actions of one attempt."""

    outcome: Outcome
    deactivate: bool = False
    token_invalid_since: datetime | None = None  # APNs 410 timestamp
    # "max_attempts", "permanent:<code>" or "credential_hold"
    dead_letter_reason: str | None = None


def decide_before_push(n: Notification, now: datetime) -> Decision | None:
    """Expired without a push when its TTL passed before the claim; None: push it."""
    expires_at = n.expires_at
    if expires_at is None or expires_at >= now:
        return None
    error = LastError("ttl_expired", "ttl_seconds passed before delivery")
    return Decision(Outcome(Status.EXPIRED, AttemptOutcome.EXPIRED, now, last_error=error))


def decide(
    n: Notification,
    result: PushResult,
    now: datetime,
    settings: Settings,
    rng: random.Random | None = None,
) -> Decision:
    """Map a provider answer to the stored outcome and the follow-up actions.

    ``n.attempts`` counts this attempt; a retry past ``max_attempts`` fails and is
    dead-lettered, and one that could only happen after the TTL expires.
    """
    status = result.provider_status
    if result.outcome is PushOutcome.SENT:
        return Decision(
            Outcome(
                Status.SENT,
                AttemptOutcome.SENT,
                now,
                provider_status=status,
                provider_message_id=result.message_id,
            )
        )
    error = LastError(
        result.code or result.outcome.value, result.message or result.outcome.value, status
    )
    if result.outcome is PushOutcome.TOKEN_DEAD:
        outcome = Outcome(Status.FAILED, AttemptOutcome.TOKEN_DEAD, now, status, last_error=error)
        return Decision(outcome, deactivate=True, token_invalid_since=result.token_invalid_since)
    if result.outcome is PushOutcome.PERMANENT:
        outcome = Outcome(Status.FAILED, AttemptOutcome.PERMANENT, now, status, last_error=error)
        return Decision(outcome, dead_letter_reason=f"permanent:{error.code}")
    if result.code in HOLD_CODES:
        return _hold(n, result, error, now, settings, rng)
    if n.attempts >= settings.max_attempts:
        outcome = Outcome(Status.FAILED, AttemptOutcome.RETRY, now, status, last_error=error)
        return Decision(outcome, dead_letter_reason="max_attempts")
    when = next_attempt_at(now, n.attempts, settings, result.retry_after_seconds, rng)
    return _retry_at(n, when, now, status, error)


def _retry_at(
    n: Notification, when: datetime, now: datetime, status: int | None, error: LastError
) -> Decision:
    """Retry at ``when``, or expire if that is past the notification's TTL."""
    expires_at = n.expires_at
    if expires_at is not None and when > expires_at:
        return Decision(
            Outcome(Status.EXPIRED, AttemptOutcome.RETRY, now, status, last_error=error)
        )
    return Decision(
        Outcome(
            Status.RETRYING,
            AttemptOutcome.RETRY,
            now,
            status,
            next_attempt_at=when,
            last_error=error,
        )
    )


def _hold(
    n: Notification,
    result: PushResult,
    error: LastError,
    now: datetime,
    settings: Settings,
    rng: random.Random | None,
) -> Decision:
    """The credential, not the notification, is at fault (refused, unhealthy, or at its
    in-flight bound): hold it as retrying. Its budget is time, not ``max_attempts``: a
    notification waits up to ``credential_hold_seconds`` after its creation (and never past
    its TTL) for the credential to heal or be replaced, then fails."""
    status = result.provider_status
    # Busy is the credential's in-flight bound, not a fault: busy answers do not push the
    # next attempt further away. Else a released backlog larger than the bound went back on
    # its grown backoff, minutes away (a `bench --tenants` run: 6 of 632 still waiting
    # 300 s after the credential was replaced).
    attempt = 1 if result.code == BUSY else n.attempts
    when = next_attempt_at(now, attempt, settings, result.retry_after_seconds, rng)
    expires_at = n.expires_at
    held_until = n.created_at + timedelta(seconds=settings.credential_hold_seconds)
    if when > held_until and (expires_at is None or when <= expires_at):
        outcome = Outcome(Status.FAILED, AttemptOutcome.RETRY, now, status, last_error=error)
        return Decision(outcome, dead_letter_reason="credential_hold")
    return _retry_at(n, when, now, status, error)
