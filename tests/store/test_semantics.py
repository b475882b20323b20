"""The backend-neutral rules of :mod:`notifier.store.semantics`, which both stores use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notifier.models import Status
from notifier.store.base import CancelResult, ClaimMiss, StoreUnavailable
from notifier.store.mongo import MongoStore
from notifier.store.postgres import PostgresStore
from notifier.store.semantics import (
    SharedStoreLogic,
    cancel_followup,
    classify_miss,
    first_of_each_key,
    insert_results,
    zero_filled_counts,
)
from tests.store.conftest import make_notification

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
EARLIER = NOW - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("fields", "miss"),
    [
        ({"status": Status.SENT}, ClaimMiss.FINAL),
        ({"status": Status.CANCELLED, "locked_by": "w"}, ClaimMiss.FINAL),
        ({"locked_by": "w", "lock_expiry": LATER}, ClaimMiss.LOCKED),
        ({"locked_by": "w", "lock_expiry": NOW}, ClaimMiss.LOCKED),  # expires after now
        ({"status": Status.SCHEDULED, "scheduled_for": LATER}, ClaimMiss.NOT_DUE),
        ({"status": Status.RETRYING, "next_attempt_at": LATER}, ClaimMiss.NOT_DUE),
        # claimable as read, yet the claim missed: another claim took it first
        ({}, ClaimMiss.LOCKED),
        ({"status": Status.RETRYING, "next_attempt_at": EARLIER}, ClaimMiss.LOCKED),
        ({"locked_by": "dead", "lock_expiry": EARLIER}, ClaimMiss.LOCKED),
        ({"locked_by": "dead", "lock_expiry": EARLIER, "scheduled_for": LATER}, ClaimMiss.NOT_DUE),
    ],
)
def test_a_missed_claim_is_classified_from_the_notification_read(
    fields: dict[str, object], miss: ClaimMiss
) -> None:
    assert classify_miss(make_notification(NOW, **fields), NOW) is miss


def test_a_missed_claim_on_nothing_is_missing() -> None:
    assert classify_miss(None, NOW) is ClaimMiss.MISSING


def test_cancel_followup_reads_the_notification_as_it_is() -> None:
    assert cancel_followup(None) == (CancelResult.NOT_FOUND, None)
    cancelled = make_notification(NOW, status=Status.CANCELLED)
    assert cancel_followup(cancelled) == (CancelResult.CANCELLED, cancelled)
    for status in (Status.SENT, Status.FAILED, Status.EXPIRED, Status.PENDING):
        other = make_notification(NOW, status=status)  # pending: a worker is pushing it
        assert cancel_followup(other) == (CancelResult.CONFLICT, other)


def test_counts_have_every_status() -> None:
    counts = zero_filled_counts([("sent", 3), ("pending", 1)])
    assert counts == {s: {"sent": 3, "pending": 1}.get(s.value, 0) for s in Status}


def test_insert_results_replay_the_first_of_a_key_and_the_stored_one() -> None:
    a1 = make_notification(NOW, idempotency_key="a")
    a2 = make_notification(NOW, idempotency_key="a")
    b = make_notification(NOW, idempotency_key="b")
    plain = make_notification(NOW)
    stored_b = make_notification(EARLIER, idempotency_key="b")
    batch = [a1, b, a2, plain]
    to_insert, first_of_key = first_of_each_key(batch)
    assert to_insert == [a1, b, plain]
    # the store created a1 and plain; b's key was stored already
    results = insert_results(batch, first_of_key, {a1.id, plain.id}, {("a", "b"): stored_b})
    assert [(r.notification, r.created) for r in results] == [
        (a1, True),
        (stored_b, False),
        (a1, False),
        (plain, True),
    ]
    # the stored one vanished (a prune) between the insert and the read: retry later
    with pytest.raises(StoreUnavailable):
        insert_results(batch, first_of_key, {a1.id, plain.id}, {})


@pytest.mark.parametrize("store_class", [PostgresStore, MongoStore])
def test_both_stores_take_claim_complete_and_cancel_from_the_shared_logic(
    store_class: type,
) -> None:
    """One definition for both: a backend overriding one of them would be drift."""
    assert issubclass(store_class, SharedStoreLogic)
    for name in ("claim", "complete", "cancel"):
        assert getattr(store_class, name) is getattr(SharedStoreLogic, name), name
