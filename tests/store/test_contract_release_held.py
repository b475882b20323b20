"""Store contract: release_held, a credential's held notifications made due now (issue 16;
every implementation)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from notifier.models import LastError, Notification, Platform, Status, Target
from notifier.providers.health import HOLD_CODES
from notifier.store.base import NotificationStore
from tests.store.conftest import insert, make_notification

HELD = LastError("credential_unhealthy", "held")
REFUSED = LastError("config_error", "refused")


def _retrying(
    now: datetime, due_in: float, error: LastError | None = HELD, **fields: Any
) -> Notification:
    return make_notification(
        now,
        status=Status.RETRYING,
        next_attempt_at=now + timedelta(seconds=due_in),
        last_error=error,
        attempts=3,
        **fields,
    )


async def test_release_held_makes_only_that_apps_held_retrying_of_that_platform_due(
    store: NotificationStore, now: datetime
) -> None:
    apns = Target(Platform.APNS, "ab" * 32)
    n = {
        "held": _retrying(now, 900),
        "refused": _retrying(now, 600, REFUSED),
        "other_app": _retrying(now, 900, app="b"),
        "other_platform": _retrying(now, 900, target=apns),
        "not_a_hold": _retrying(now, 900, LastError("unavailable", "503")),
        "no_error": _retrying(now, 900, None),
        "due_earlier": _retrying(now, -5),
        "delivered": make_notification(now, status=Status.SENT, last_error=HELD),
        "pending": make_notification(now, last_error=HELD),
    }
    await insert(store, *n.values())
    before = {k: await store.get(v.id) for k, v in n.items()}

    assert await store.release_held("a", Platform.FCM, now, codes=HOLD_CODES) == 2
    for key in ("held", "refused"):
        doc = await store.get(n[key].id)
        assert doc is not None and doc.next_attempt_at == now and doc.status is Status.RETRYING
        assert doc.attempts == 3 and doc.last_error == n[key].last_error
    for key in n.keys() - {"held", "refused"}:
        doc, was = await store.get(n[key].id), before[key]
        assert doc is not None and was is not None
        assert doc.next_attempt_at == was.next_attempt_at, key
        assert doc.status is was.status, key
    # idempotent: a second release (another worker, a moment later) changes nothing
    later = now + timedelta(milliseconds=5)
    assert await store.release_held("a", Platform.FCM, later, codes=HOLD_CODES) == 0
    doc = await store.get(n["held"].id)
    assert doc is not None and doc.next_attempt_at == now


async def test_release_held_of_every_app_is_the_default_credentials_release(
    store: NotificationStore, now: datetime
) -> None:
    a, b = _retrying(now, 900), _retrying(now, 900, app="b")
    apns = _retrying(now, 900, target=Target(Platform.APNS, "cd" * 32))
    await insert(store, a, b, apns)
    assert await store.release_held(None, Platform.FCM, now, codes=HOLD_CODES) == 2
    for n, due in ((a, now), (b, now), (apns, apns.next_attempt_at)):
        doc = await store.get(n.id)
        assert doc is not None and doc.next_attempt_at == due


async def test_concurrent_releases_are_harmless(store: NotificationStore, now: datetime) -> None:
    held = [_retrying(now, 300 + i) for i in range(20)]
    await insert(store, *held)
    counts = await asyncio.gather(
        *(store.release_held("a", Platform.FCM, now, codes=HOLD_CODES) for _ in range(4))
    )
    assert sum(counts) == 20
    for n in held:
        doc = await store.get(n.id)
        assert doc is not None and doc.next_attempt_at == now and doc.status is Status.RETRYING
