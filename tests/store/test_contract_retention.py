"""Store contract, retention: ``delete_final`` (``notifier prune``) on every implementation."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from notifier.models import Notification, Status, id_floor, new_id
from notifier.store.base import NotificationStore
from tests.store.conftest import insert, make_notification


def made_at(moment: datetime, **fields: object) -> Notification:
    """A notification made at ``moment``: its UUIDv7 id, creation and update times."""
    nid = id_floor(moment)[:-12] + secrets.token_hex(6)
    return make_notification(moment, id=nid, **fields)


def test_id_floor_sorts_ids_by_their_making_time(now: datetime) -> None:
    floor = id_floor(now)
    assert uuid.UUID(floor).version == 7
    assert id_floor(now - timedelta(milliseconds=1)) < floor < id_floor(now + timedelta(days=1))
    assert id_floor(now - timedelta(seconds=1)) < new_id() < id_floor(now + timedelta(seconds=1))


async def test_delete_final_deletes_old_final_ones_and_keeps_the_rest(
    store: NotificationStore, now: datetime
) -> None:
    old, cutoff, recent = now - timedelta(days=40), now - timedelta(days=30), now
    gone = [made_at(old, status=s) for s in (Status.SENT, Status.FAILED, Status.CANCELLED)]
    gone.append(made_at(old, status=Status.EXPIRED))
    kept = [
        made_at(old),  # pending, however old
        made_at(old, status=Status.RETRYING, next_attempt_at=now),
        made_at(old, status=Status.SCHEDULED, scheduled_for=now),
        made_at(recent, status=Status.SENT),
        made_at(old, status=Status.SENT, updated_at=recent),  # final only lately
    ]
    await insert(store, *gone, *kept)

    assert await store.delete_final(cutoff, limit=100) == len(gone)
    for n in gone:
        assert await store.get(n.id) is None
    for n in kept:
        assert await store.get(n.id) is not None
    assert await store.delete_final(cutoff, limit=100) == 0


async def test_delete_final_takes_at_most_limit_oldest_first(
    store: NotificationStore, now: datetime
) -> None:
    ns = [made_at(now - timedelta(days=40 - i), status=Status.SENT) for i in range(5)]
    await insert(store, *ns)
    cutoff = now - timedelta(days=1)
    assert await store.delete_final(cutoff, limit=2) == 2
    assert [await store.get(n.id) is None for n in ns] == [True, True, False, False, False]
    assert await store.delete_final(cutoff, limit=2) == 2
    assert await store.delete_final(cutoff, limit=2) == 1
    assert await store.delete_final(cutoff, limit=0) == 0
