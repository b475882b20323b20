"""Store contract, API side: insert, idempotency, get, list, cancel (every implementation)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from notifier.models import Status
from notifier.store.base import CancelResult, NotificationStore
from tests.store.conftest import ConnectStore, insert, make_notification


async def test_inserted_notification_reads_back_with_every_field(
    store: NotificationStore, now: datetime
) -> None:
    n = make_notification(
        now,
        user_id="u1",
        collapse_key="c1",
        apns_topic="com.example.a.voip",
        ttl_seconds=3600,
        scheduled_for=now + timedelta(hours=1),
        status=Status.SCHEDULED,
        idempotency_key="k1",
        request_fingerprint="fp",
    )
    [stored] = await insert(store, n)
    assert stored == n
    got = await store.get(n.id)
    assert got == n
    assert got is not None and got.created_at.tzinfo is not None


async def test_get_hides_other_apps_and_missing_ids(
    store: NotificationStore, now: datetime
) -> None:
    [n] = await insert(store, make_notification(now, app="a"))
    assert await store.get(n.id, "a") == n
    assert await store.get(n.id, "b") is None
    assert await store.get("01900000-0000-7000-8000-000000000000") is None
    assert await store.get("not-an-id") is None


async def test_idempotency_key_replay_returns_the_stored_notification(
    store: NotificationStore, now: datetime
) -> None:
    [first] = await insert(store, make_notification(now, idempotency_key="k"))
    [replay] = await store.insert_many([make_notification(now, idempotency_key="k", body="x")])
    assert not replay.created
    assert replay.notification == first
    others = await store.insert_many(
        [
            make_notification(now, idempotency_key="k2"),  # another key
            make_notification(now, app="b", idempotency_key="k"),  # another app
            make_notification(now),  # no key
        ]
    )
    assert [r.created for r in others] == [True, True, True]


async def test_same_key_twice_in_one_batch_first_wins(
    store: NotificationStore, now: datetime
) -> None:
    batch = [
        make_notification(now, idempotency_key="k", body="first"),
        make_notification(now),
        make_notification(now, idempotency_key="k", body="second"),
    ]
    results = await store.insert_many(batch)
    assert [r.created for r in results] == [True, True, False]
    assert results[2].notification.id == batch[0].id
    assert results[2].notification.body == "first"
    assert [r.notification.id for r in results[:2]] == [batch[0].id, batch[1].id]
    assert await store.get(batch[2].id) is None


async def test_concurrent_inserts_of_one_key_create_exactly_once(
    connect_store: ConnectStore, store: NotificationStore, now: datetime
) -> None:
    stores = [store, *[await connect_store() for _ in range(4)]]
    batches = [[make_notification(now, idempotency_key="race")] for _ in range(10)]
    results = await asyncio.gather(
        *(stores[i % len(stores)].insert_many(b) for i, b in enumerate(batches))
    )
    created = [r[0] for r in results if r[0].created]
    assert len(created) == 1
    assert {r[0].notification.id for r in results} == {created[0].notification.id}
    assert await store.list_by_idempotency_key("a", "race") == [created[0].notification]


async def test_list_pages_newest_first_with_filters(
    store: NotificationStore, now: datetime
) -> None:
    ns = [
        make_notification(now, user_id="u1" if i % 2 else "u2", status=Status.PENDING)
        for i in range(7)
    ]
    ns.append(make_notification(now, user_id="u1", status=Status.SCHEDULED))
    ns.append(make_notification(now, app="b", user_id="u1"))
    await insert(store, *ns)
    newest_first = sorted((n.id for n in ns if n.app == "a"), reverse=True)

    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_notifications("a", limit=3, after=after)
        assert len(page.items) <= 3
        seen += [n.id for n in page.items]
        if page.next is None:
            break
        assert page.next == page.items[-1].id
        after = page.next
    assert seen == newest_first

    u1 = await store.list_notifications("a", user_id="u1", limit=100)
    assert [n.id for n in u1.items] == [
        i for i in newest_first if i in {n.id for n in ns if n.user_id == "u1"}
    ]
    assert u1.next is None
    scheduled = await store.list_notifications("a", status=Status.SCHEDULED)
    assert [n.id for n in scheduled.items] == [ns[7].id]
    both = await store.list_notifications("a", user_id="u2", status=Status.SCHEDULED)
    assert both.items == [] and both.next is None


async def test_list_by_idempotency_key_finds_fan_out_children(
    store: NotificationStore, now: datetime
) -> None:
    keys = ["k", "k#0", "k#1", "kx", "k#", "j#1"]
    ns = await insert(store, *(make_notification(now, idempotency_key=k) for k in keys))
    found = await store.list_by_idempotency_key("a", "k")
    expected = sorted(n.id for n in ns if n.idempotency_key in {"k", "k#0", "k#1", "k#"})
    assert [n.id for n in found] == expected
    assert await store.list_by_idempotency_key("b", "k") == []


async def test_list_by_idempotency_keys_answers_each_key_as_the_one_key_lookup(
    store: NotificationStore, now: datetime
) -> None:
    """A batch's keys in one call: each key, its own documents and its fan-out's, by id."""
    keys = ["k", "k#0", "k#1", "kx", "k#", "j#1", "m"]
    ns = await insert(store, *(make_notification(now, idempotency_key=k) for k in keys))
    asked = ["k", "kx", "j", "none", "k", "m\x00"]
    found = await store.list_by_idempotency_keys("a", asked)

    def ids(*stored_keys: str) -> list[str]:
        return sorted(n.id for n in ns if n.idempotency_key in stored_keys)

    assert {k: [n.id for n in v] for k, v in found.items()} == {
        "k": ids("k", "k#0", "k#1", "k#"),
        "kx": ids("kx"),
        "j": ids("j#1"),
    }  # a key with nothing stored is left out
    assert await store.list_by_idempotency_keys("b", asked) == {}
    assert await store.list_by_idempotency_keys("a", []) == {}


async def test_mark_published_sets_only_unset_times(
    store: NotificationStore, now: datetime
) -> None:
    a, b = await insert(store, make_notification(now), make_notification(now))
    await store.mark_published([a.id], now)
    await store.mark_published([a.id, b.id], now + timedelta(seconds=5))
    got_a, got_b = await store.get(a.id), await store.get(b.id)
    assert got_a is not None and got_a.published_at == now
    assert got_b is not None and got_b.published_at == now + timedelta(seconds=5)


async def test_cancel_open_notification(store: NotificationStore, now: datetime) -> None:
    [n] = await insert(store, make_notification(now, status=Status.SCHEDULED))
    result, doc = await store.cancel(n.id, "a", now)
    assert result is CancelResult.CANCELLED
    assert doc is not None and doc.status is Status.CANCELLED
    result, doc = await store.cancel(n.id, "a", now)  # cancelling twice is harmless
    assert result is CancelResult.CANCELLED
    assert (await store.claim(n.id, "w", now, 30)).notification is None


async def test_cancel_conflicts_when_sent_or_being_pushed(
    store: NotificationStore, now: datetime
) -> None:
    sent, locked = await insert(
        store, make_notification(now, status=Status.SENT), make_notification(now)
    )
    assert (await store.claim(locked.id, "w", now, 30)).won
    result, doc = await store.cancel(sent.id, "a", now)
    assert result is CancelResult.CONFLICT
    assert doc is not None and doc.status is Status.SENT
    result, doc = await store.cancel(locked.id, "a", now + timedelta(seconds=1))
    assert result is CancelResult.CONFLICT
    got = await store.get(locked.id)
    assert got is not None and got.status is Status.PENDING and got.locked_by == "w"
    # once the lock has expired (its worker died), it can be cancelled
    result, doc = await store.cancel(locked.id, "a", now + timedelta(seconds=31))
    assert result is CancelResult.CANCELLED


async def test_cancel_other_app_or_missing_is_not_found(
    store: NotificationStore, now: datetime
) -> None:
    [n] = await insert(store, make_notification(now, app="a"))
    assert await store.cancel(n.id, "b", now) == (CancelResult.NOT_FOUND, None)
    assert await store.cancel("nope", "a", now) == (CancelResult.NOT_FOUND, None)
    got = await store.get(n.id)
    assert got is not None and got.status is Status.PENDING
