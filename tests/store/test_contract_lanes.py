"""Store contract, lanes (issue 18): a notification keeps its lane, the sweeper's answers carry
each document's app and lane (so it publishes into the right queue), and ``bulk_apps`` names
the apps whose bulk queues the workers consume (every implementation)."""

from __future__ import annotations

from datetime import datetime, timedelta

from notifier.models import AttemptOutcome, Lane, Status, Wake
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import NotificationStore, Outcome, RecoveredLock
from tests.store.conftest import insert, make_notification

BULK = Lane.BULK
TRANSACTIONAL = Lane.TRANSACTIONAL


async def test_a_notification_keeps_its_lane(store: NotificationStore, now: datetime) -> None:
    bulk, default = await insert(
        store, make_notification(now, lane=BULK, idempotency_key="k1"), make_notification(now)
    )
    assert default.lane is TRANSACTIONAL  # the model's default, stored as such
    got = {id: await store.get(id) for id in (bulk.id, default.id)}
    assert {id: n.lane for id, n in got.items() if n is not None} == {
        bulk.id: BULK,
        default.id: TRANSACTIONAL,
    }
    page = await store.list_notifications("a")
    assert {n.id: n.lane for n in page.items} == {bulk.id: BULK, default.id: TRANSACTIONAL}
    claimed = await store.claim(bulk.id, "w1", now, 30)
    assert claimed.notification is not None and claimed.notification.lane is BULK
    # a replay answers the stored notification, lane included, whatever the replay asks
    [replay] = await store.insert_many([make_notification(now, idempotency_key="k1")])
    assert not replay.created and replay.notification.lane is BULK


async def test_a_take_answers_each_documents_app_and_lane(
    store: NotificationStore, now: datetime
) -> None:
    old = now - timedelta(seconds=60)
    stored = await insert(
        store,
        make_notification(old, app="shop", lane=BULK),
        make_notification(old, app="shop"),
        make_notification(old, app="bank", lane=TRANSACTIONAL),
        make_notification(
            old, app="news", lane=BULK, status=Status.RETRYING, attempts=1, next_attempt_at=old
        ),
    )
    taken = await store.take_due_for_publish(
        now, limit=10, unpublished_grace_seconds=10, stale_published_seconds=3600
    )
    assert len(taken) == len(stored)
    assert set(taken) == {
        Wake(stored[0].id, "shop", BULK),
        Wake(stored[1].id, "shop", TRANSACTIONAL),
        Wake(stored[2].id, "bank", TRANSACTIONAL),
        Wake(stored[3].id, "news", BULK),
    }


async def test_a_recovered_lock_carries_its_app_and_lane(
    store: NotificationStore, now: datetime
) -> None:
    bulk, transactional = await insert(
        store,
        make_notification(now, app="shop", lane=BULK),
        make_notification(now, app="bank"),
    )
    await store.claim_many([bulk.id, transactional.id], "w-dead", now, 5)
    later = now + timedelta(seconds=6)
    recovered = await store.recover_expired_locks(
        later, limit=10, policy=UnknownOutcomePolicy.RESEND
    )
    assert sorted(recovered, key=lambda r: r.id) == sorted(
        [
            RecoveredLock(bulk.id, unknown_attempt=True, republish=True, app="shop", lane=BULK),
            RecoveredLock(
                transactional.id,
                unknown_attempt=True,
                republish=True,
                app="bank",
                lane=TRANSACTIONAL,
            ),
        ],
        key=lambda r: r.id,
    )
    assert {r.wake for r in recovered} == {bulk.wake, transactional.wake}


async def test_bulk_apps_names_the_apps_with_open_bulk_notifications(
    store: NotificationStore, now: datetime
) -> None:
    assert await store.bulk_apps() == []
    soon = now + timedelta(minutes=5)
    await insert(
        store,
        make_notification(now, app="campaign", lane=BULK),
        make_notification(now, app="campaign", lane=BULK),
        make_notification(
            now, app="digest", lane=BULK, status=Status.SCHEDULED, scheduled_for=soon
        ),
        make_notification(
            now, app="again", lane=BULK, status=Status.RETRYING, attempts=1, next_attempt_at=soon
        ),
        # transactional only: its queue is the shared transactional one
        make_notification(now, app="bank"),
        # bulk, but every bulk one final; its open ones transactional
        make_notification(now, app="done", lane=BULK, status=Status.SENT),
        make_notification(now, app="done", lane=BULK, status=Status.FAILED),
        make_notification(now, app="done", lane=BULK, status=Status.CANCELLED),
        make_notification(now, app="done", lane=BULK, status=Status.EXPIRED),
        make_notification(now, app="done"),
    )
    assert await store.bulk_apps() == ["again", "campaign", "digest"]


async def test_an_app_leaves_bulk_apps_when_its_last_bulk_notification_ends(
    store: NotificationStore, now: datetime
) -> None:
    """Being pushed (locked) is still open; the outcome that makes it final removes the app."""
    first, second = await insert(
        store,
        make_notification(now, app="campaign", lane=BULK),
        make_notification(now, app="campaign", lane=BULK),
    )
    claims = await store.claim_many([first.id, second.id], "w1", now, 30)
    assert all(c.won for c in claims.values())
    assert await store.bulk_apps() == ["campaign"]
    done = Outcome(Status.SENT, AttemptOutcome.SENT, now + timedelta(seconds=1), 200)
    assert await store.complete(first.id, "w1", done)
    assert await store.bulk_apps() == ["campaign"]
    assert await store.complete(second.id, "w1", done)
    assert await store.bulk_apps() == []
