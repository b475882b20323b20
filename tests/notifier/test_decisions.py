"""Delivery policy as a table: a provider's answer (or a passed TTL) to what is stored and
what follows (deactivation, dead-lettering). Pure: no store, no broker, no clock."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from notifier.decisions import Decision, decide, decide_before_push
from notifier.models import AttemptOutcome, Notification, Platform, Status, Target
from notifier.providers.base import PushOutcome, PushResult
from notifier.settings import load_settings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=2)
SETTINGS = load_settings({}, max_attempts=5, retry_base_seconds=10, retry_max_seconds=60)


class Ceiling(random.Random):
    """Full jitter at its top: the delay is the backoff ceiling itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


def note(attempts: int = 1, ttl_seconds: int | None = None) -> Notification:
    return Notification(
        id="n1",
        app="a",
        target=Target(Platform.APNS, "ab" * 32),
        created_at=NOW - timedelta(seconds=1),
        updated_at=NOW,
        ttl_seconds=ttl_seconds,
        attempts=attempts,
    )


R = PushOutcome
# push result, attempts (this one included), ttl_seconds
#   -> status, attempt outcome, next attempt in seconds, deactivate?, dead-letter reason, code
TABLE = [
    pytest.param(
        PushResult(R.SENT, 200, message_id="m1"), 1, None,
        Status.SENT, AttemptOutcome.SENT, None, False, None, None,
        id="sent",
    ),
    pytest.param(
        PushResult(R.TOKEN_DEAD, 410, code="Unregistered", token_invalid_since=SINCE), 1, None,
        Status.FAILED, AttemptOutcome.TOKEN_DEAD, None, True, None, "Unregistered",
        id="dead-token-deactivates",
    ),
    pytest.param(
        PushResult(R.PERMANENT, 400, code="BadTopic"), 1, None,
        Status.FAILED, AttemptOutcome.PERMANENT, None, False, "permanent:BadTopic", "BadTopic",
        id="permanent-dead-letters",
    ),
    pytest.param(
        PushResult(R.PERMANENT), 1, None,
        Status.FAILED, AttemptOutcome.PERMANENT, None, False, "permanent:permanent", "permanent",
        id="permanent-without-a-code",
    ),
    pytest.param(
        PushResult(R.RETRY, 503, code="UNAVAILABLE"), 1, None,
        Status.RETRYING, AttemptOutcome.RETRY, 10.0, False, None, "UNAVAILABLE",
        id="retry-after-base",
    ),
    pytest.param(
        PushResult(R.RETRY, 503, code="UNAVAILABLE"), 3, None,
        Status.RETRYING, AttemptOutcome.RETRY, 40.0, False, None, "UNAVAILABLE",
        id="retry-doubles",
    ),
    pytest.param(
        PushResult(R.RETRY, 503), 4, None,
        Status.RETRYING, AttemptOutcome.RETRY, 60.0, False, None, "retry",
        id="retry-capped",
    ),
    pytest.param(
        PushResult(R.RETRY, 429, retry_after_seconds=300, code="TooManyRequests"), 1, None,
        Status.RETRYING, AttemptOutcome.RETRY, 300.0, False, None, "TooManyRequests",
        id="retry-never-before-retry-after",
    ),
    pytest.param(
        PushResult(R.RETRY, code="timeout"), 5, None,
        Status.FAILED, AttemptOutcome.RETRY, None, False, "max_attempts", "timeout",
        id="retries-exhausted-dead-letter",
    ),
    pytest.param(
        PushResult(R.RETRY, 503), 1, 5,
        Status.EXPIRED, AttemptOutcome.RETRY, None, False, None, "retry",
        id="retry-past-the-ttl-expires",
    ),
    # issue 16: the credential, not the notification, is at fault: held as retrying past
    # max_attempts (on a time budget, credential_hold_seconds), still bounded by the TTL
    pytest.param(
        PushResult(R.RETRY, 403, code="config_error"), 5, None,
        Status.RETRYING, AttemptOutcome.RETRY, 60.0, False, None, "config_error",
        id="credential-refused-held-past-max-attempts",
    ),
    pytest.param(
        PushResult(R.RETRY, code="credential_unhealthy", retry_after_seconds=30), 9, None,
        Status.RETRYING, AttemptOutcome.RETRY, 60.0, False, None, "credential_unhealthy",
        id="credential-unhealthy-held",
    ),
    pytest.param(
        PushResult(R.RETRY, code="tls"), 5, None,
        Status.RETRYING, AttemptOutcome.RETRY, 60.0, False, None, "tls",
        id="tls-failure-held-past-max-attempts",
    ),
    pytest.param(
        PushResult(R.RETRY, code="credential_busy"), 1, None,
        Status.RETRYING, AttemptOutcome.RETRY, 10.0, False, None, "credential_busy",
        id="credential-busy-held",
    ),
    pytest.param(
        PushResult(R.RETRY, code="credential_busy"), 7, None,
        Status.RETRYING, AttemptOutcome.RETRY, 10.0, False, None, "credential_busy",
        id="credential-busy-does-not-grow-the-backoff",
    ),
    pytest.param(
        PushResult(R.RETRY, 401, code="config_error"), 5, 5,
        Status.EXPIRED, AttemptOutcome.RETRY, None, False, None, "config_error",
        id="credential-hold-ends-at-the-ttl",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("result", "attempts", "ttl", "status", "attempt", "next_in", "deactivate", "dead", "code"),
    TABLE,
)
def test_a_provider_answer_decides_outcome_and_follow_ups(
    result: PushResult,
    attempts: int,
    ttl: int | None,
    status: Status,
    attempt: AttemptOutcome,
    next_in: float | None,
    deactivate: bool,
    dead: str | None,
    code: str | None,
) -> None:
    decision = decide(note(attempts, ttl), result, NOW, SETTINGS, Ceiling())
    outcome = decision.outcome
    assert (outcome.status, outcome.attempt_outcome) == (status, attempt)
    assert outcome.finished_at == NOW and outcome.provider_status == result.provider_status
    expected_next = None if next_in is None else NOW + timedelta(seconds=next_in)
    assert outcome.next_attempt_at == expected_next
    assert decision.deactivate is deactivate
    assert decision.token_invalid_since == (SINCE if deactivate else None)
    assert decision.dead_letter_reason == dead
    assert (outcome.last_error.code if outcome.last_error else None) == code
    if status is Status.SENT:
        assert outcome.provider_message_id == result.message_id


def test_a_ttl_passed_before_the_push_expires_it_without_one() -> None:
    assert decide_before_push(note(ttl_seconds=60), NOW) is None
    assert decide_before_push(note(), NOW) is None
    expired = decide_before_push(note(ttl_seconds=0), NOW)
    assert isinstance(expired, Decision)
    assert (expired.outcome.status, expired.outcome.attempt_outcome) == (
        Status.EXPIRED,
        AttemptOutcome.EXPIRED,
    )
    assert expired.outcome.last_error is not None
    assert expired.outcome.last_error.code == "ttl_expired"
    assert not expired.deactivate and expired.dead_letter_reason is None


def test_retry_timing_is_full_jitter_below_the_ceiling() -> None:
    rng = random.Random(3)
    nexts = {
        decide(note(2), PushResult(R.RETRY), NOW, SETTINGS, rng).outcome.next_attempt_at
        for _ in range(200)
    }
    assert all(n is not None and NOW <= n <= NOW + timedelta(seconds=20) for n in nexts)
    assert len(nexts) > 100  # spread, not one fixed delay


def test_a_held_notification_fails_once_its_credential_hold_budget_is_spent() -> None:
    settings = load_settings({}, retry_base_seconds=10, retry_max_seconds=60,
                             credential_hold_seconds=3600)  # fmt: skip
    old = note(attempts=40)
    young = replace(old, created_at=NOW - timedelta(seconds=3000))
    aged = replace(old, created_at=NOW - timedelta(seconds=3590))
    refused = PushResult(R.RETRY, 403, code="config_error")
    assert decide(young, refused, NOW, settings, Ceiling()).outcome.status is Status.RETRYING
    failed = decide(aged, refused, NOW, settings, Ceiling())
    assert failed.outcome.status is Status.FAILED
    assert failed.dead_letter_reason == "credential_hold"
