"""The lanes end to end, with a real worker process, broker, store and emulator: a login code
never waits behind a campaign, and one app's campaign does not starve another app's bulk
notifications (docs/design.md section 1, lanes).

The emulator keeps ids in the order it first received them, so the assertions are about
order: how many bulk pushes went out between the moment a notification was published and
the moment it arrived, against how much of the backlog was still waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from notifier.broker import Broker
from notifier.models import Lane
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import WorkerPool, insert_and_publish, make_notification, wait_final


async def received_order(emulator: Any) -> list[str]:
    """Every id the emulator received, in the order it first received them."""
    return list(await emulator.control.deliveries())


async def pushed_at_least(emulator: Any, n: int) -> None:
    async def enough() -> bool:
        return bool(await emulator.control.pushed() >= n)

    await wait_for(enough, timeout=120, interval=0.05, what=f"{n} pushes")


async def test_transactional_notifications_overtake_a_bulk_backlog(
    store: NotificationStore,
    broker: Broker,
    workers: WorkerPool,
    emulator: Any,
    sized: Callable[[int], int],
) -> None:
    backlog, logins, concurrency = sized(3000), 20, 32
    campaign = [make_notification(app="campaign", lane=Lane.BULK) for _ in range(backlog)]
    bulk_ids = await insert_and_publish(store, broker, campaign)
    await workers.start(concurrency=concurrency)
    await pushed_at_least(emulator, sized(200))  # the campaign is draining

    before = await emulator.control.pushed()
    codes = [make_notification(app="campaign") for _ in range(logins)]  # transactional
    code_ids = await insert_and_publish(store, broker, codes)
    await wait_final(store, code_ids + bulk_ids, timeout=300)

    order = await received_order(emulator)
    position = {nid: i for i, nid in enumerate(order)}
    assert set(code_ids) <= position.keys() and set(bulk_ids) <= position.keys()
    last_code = max(position[nid] for nid in code_ids)
    # bulk notifications not yet pushed when the codes were published
    waiting = sum(1 for nid in bulk_ids if position[nid] >= before)
    # Every code arrived within a few slots' worth of bulk pushes, while most of that
    # backlog still waited (with first-come slots and no reserve they took 787 of 2,784).
    bound = logins + max(8 * concurrency, waiting // 10)
    assert last_code - before <= bound, (last_code, before, waiting)
    assert max(position[nid] for nid in bulk_ids) > last_code


async def test_a_second_apps_bulk_is_not_starved_by_a_campaign(
    store: NotificationStore,
    broker: Broker,
    workers: WorkerPool,
    emulator: Any,
    sized: Callable[[int], int],
) -> None:
    """App big queues a campaign; app small sends a little bulk while it drains. Once the
    worker consumes small's queue, the two apps take turns: small's notifications all go
    out while big's pushes in the meantime stay within a few times small's own count."""
    big_count, small_count, concurrency = sized(3000), sized(200), 16
    assert big_count > 10 * small_count
    big = [make_notification(app="big", lane=Lane.BULK) for _ in range(big_count)]
    big_ids = await insert_and_publish(store, broker, big, per_message=10)
    proc = await workers.start(concurrency=concurrency)
    await pushed_at_least(emulator, sized(100))

    small = [make_notification(app="small", lane=Lane.BULK) for _ in range(small_count)]
    small_ids = await insert_and_publish(store, broker, small, per_message=10)

    async def small_consumed() -> bool:
        return "small" in (await proc.stats())["lanes"]["bulk"]["apps"]

    await wait_for(small_consumed, timeout=30, interval=0.05, what="small's queue consumed")
    since = await emulator.control.pushed()
    await wait_final(store, small_ids + big_ids, timeout=300)

    order = await received_order(emulator)
    position = {nid: i for i, nid in enumerate(order)}
    last_small = max(position[nid] for nid in small_ids)
    big_meanwhile = sum(1 for nid in big_ids if since <= position[nid] < last_small)
    big_left = sum(1 for nid in big_ids if position[nid] >= since)
    # in turns of one message (10 ids) each, plus what was already in flight
    assert big_meanwhile <= 3 * small_count + 2 * concurrency, (big_meanwhile, small_count)
    assert big_meanwhile < big_left // 2, (big_meanwhile, big_left)
