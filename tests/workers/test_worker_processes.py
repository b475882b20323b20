"""Worker processes against real RabbitMQ, real PostgreSQL and the provider emulator.

Each test starts ``notifier worker`` subprocesses on its own queue and metrics ports, feeds
them the way the API does (insert, publish, mark published) and checks what users rely
on: every notification ends final, each is pushed once (emulator counts), retries are
spaced, dead tokens are deactivated, scheduled ones are never early, shutdown drains.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from notifier.broker import Broker
from notifier.models import Platform, Status, utcnow
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import (
    WorkerPool,
    apns_token,
    fcm_token,
    insert_and_publish,
    make_notification,
    wait_final,
)
from tests.workers.processes import metric_total, publish_to_slow_tokens, stat_reaches

pytestmark = pytest.mark.slow


async def push_counts(emulator: Any, ids: list[str]) -> dict[str, int]:
    everything = await emulator.control.deliveries()
    return {nid: everything[nid][0] for nid in ids if nid in everything}


def parse_time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value).astimezone()
    return datetime.fromisoformat(str(value))


async def test_notifications_across_3_workers_are_each_pushed_exactly_once(
    workers: WorkerPool,
    store: NotificationStore,
    broker: Broker,
    emulator: Any,
    sized: Callable[[int], int],
) -> None:
    total = sized(2000)
    procs = await asyncio.gather(*(workers.start(concurrency=48) for _ in range(3)))
    notes = [make_notification(Platform.FCM if i % 2 else Platform.APNS) for i in range(total)]
    # 40 messages whatever the size: more than one worker's prefetch (10), so all share
    ids = await insert_and_publish(store, broker, notes, per_message=max(1, total // 40))
    final = await wait_final(store, ids, timeout=90)
    assert {n.status for n in final.values()} == {Status.SENT}
    counts = await push_counts(emulator, ids)
    assert len(counts) == total and set(counts.values()) == {1}
    stats = [await p.stats() for p in procs]
    assert sum(s["sent"] for s in stats) == total
    assert all(s["sent"] > 0 for s in stats)  # the work was shared
    # every outcome write is timed: the crash window ops watch (provider answered -> stored)
    timed = [await metric_total(p, "notifier_outcome_write_duration_seconds_count") for p in procs]
    assert sum(timed) == total


async def test_sigkill_mid_run_loses_nothing_and_duplicates_are_counted(
    workers: WorkerPool,
    store: NotificationStore,
    broker: Broker,
    emulator: Any,
) -> None:
    env = {"NOTIFIER_LOCK_SECONDS": "5"}
    victim, survivor = await asyncio.gather(
        workers.start(concurrency=32, **env), workers.start(concurrency=32, **env)
    )
    # slow pushes keep deliveries in flight when the victim dies
    # Full size on every store: 400 ids are 8 messages, so both workers hold some (at half
    # size the victim could be left with one message or none). The victim's first sends wait
    # on its claims, which the stand-in serves one at a time: a minute, not half of one.
    ids = await publish_to_slow_tokens(store, broker, emulator, count=400, tokens=40, delay_ms=300)
    await wait_for(stat_reaches(victim, "sent", 20), timeout=60, what="the victim to send some")
    victim.signal(signal.SIGKILL)
    await victim.wait()
    final = await wait_final(store, ids, timeout=90)
    assert {n.status for n in final.values()} == {Status.SENT}
    counts = await push_counts(emulator, ids)
    assert set(counts) == set(ids)  # nothing lost
    duplicates = sum(c - 1 for c in counts.values())
    unknown = [nid for nid, n in final.items() if any(h.outcome == "unknown" for h in n.history)]
    # each duplicate push comes from an attempt the sweeper marked unknown
    assert duplicates <= len(unknown)
    metrics = (await survivor.get("/metrics")).text
    assert "notifier_unknown_outcomes_total" in metrics
    print(f"SIGKILL run: {duplicates} duplicate push(es), {len(unknown)} unknown attempt(s)")


async def test_retries_are_spaced_by_backoff_and_retry_after(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    await workers.start(concurrency=8)
    flaky, limited = fcm_token(), apns_token()
    await emulator.control.flaky(flaky, 2)
    await emulator.control.rate_limited(limited, 2, retry_after=1)
    notes = [make_notification(Platform.FCM, flaky), make_notification(Platform.APNS, limited)]
    ids = await insert_and_publish(store, broker, notes)
    final = await wait_final(store, ids, timeout=30)
    for nid in ids:
        n = final[nid]
        assert n.status is Status.SENT and n.attempts == 3
        assert [h.outcome for h in n.history] == ["retry", "retry", "sent"]
        assert (await push_counts(emulator, [nid]))[nid] == 1  # only the 200 counts
    gaps = _gaps(final[ids[1]].history)
    assert all(gap >= 1.0 for gap in gaps), gaps  # never sooner than Retry-After: 1


def _gaps(history: list[Any]) -> list[float]:
    return [
        (later.started_at - earlier.finished_at).total_seconds()
        for earlier, later in itertools.pairwise(history)
    ]


async def test_dead_tokens_deactivate_the_device_and_are_not_retried(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    await workers.start(concurrency=8)
    dead_apns, bad_fcm = apns_token(), fcm_token()
    await emulator.control.dead(dead_apns)
    await emulator.control.bad(bad_fcm)
    for token, platform in ((dead_apns, Platform.APNS), (bad_fcm, Platform.FCM)):
        await store.upsert_device("app1", token, platform, "u1", utcnow() - timedelta(hours=1))
    notes = [make_notification(Platform.APNS, dead_apns), make_notification(Platform.FCM, bad_fcm)]
    ids = await insert_and_publish(store, broker, notes)
    final = await wait_final(store, ids, timeout=30)
    for note in notes:
        n = final[note.id]
        assert n.status is Status.FAILED and n.attempts == 1
        assert [h.outcome for h in n.history] == ["token_dead"]
        device = await store.get_device("app1", note.target.token)
        assert device is not None and not device.active


async def test_scheduled_notifications_are_never_pushed_early(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    await workers.start(concurrency=8)
    due = utcnow() + timedelta(seconds=2)
    notes = [make_notification(Platform.FCM, scheduled_for=due) for _ in range(5)]
    ids = await insert_and_publish(store, broker, notes)
    final = await wait_final(store, ids, timeout=30)
    for nid in ids:
        assert final[nid].status is Status.SENT
        delivery = await emulator.control.delivery(nid)
        assert delivery is not None and delivery["count"] == 1
        assert parse_time(delivery["first_received_at"]) >= due


async def test_stats_and_metrics_count_the_backlog_by_status(
    workers: WorkerPool, store: NotificationStore, broker: Broker
) -> None:
    proc = await workers.start(concurrency=8)
    later = utcnow() + timedelta(hours=1)
    waiting = [make_notification(Platform.FCM, scheduled_for=later) for _ in range(3)]
    done = [make_notification(Platform.APNS) for _ in range(2)]
    await insert_and_publish(store, broker, waiting + done)
    await wait_final(store, [n.id for n in done], timeout=30)
    backlog = {"pending": 0, "scheduled": 3, "retrying": 0}

    async def counted() -> bool:
        return bool((await proc.stats())["by_status"] == backlog)

    # /stats recounts at most once a second: the exact dict also says no final status is
    # counted (that would scan the whole table, from every worker).
    await wait_for(counted, timeout=10, what="/stats by_status == the backlog")
    exposition = (await proc.get("/metrics")).text
    assert 'notifier_notifications{status="scheduled"} 3.0' in exposition
    assert 'notifier_notifications{status="sent"}' not in exposition


async def test_sigterm_drains_in_flight_deliveries_without_duplicates(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    proc = await workers.start(concurrency=16)
    ids = await publish_to_slow_tokens(store, broker, emulator, count=16, tokens=16, delay_ms=1500)
    await wait_for(
        stat_reaches(proc, "slots_in_use", 16), timeout=20, what="16 deliveries in flight"
    )
    proc.signal(signal.SIGTERM)
    assert await proc.wait(30) == 0
    # every in-flight delivery finished and was recorded before the worker exited
    for nid in ids:
        n = await store.get(nid)
        assert n is not None and n.status is Status.SENT and n.locked_by is None
    counts = await push_counts(emulator, ids)
    assert set(counts.values()) == {1}
    # and nothing is left in the queue to redeliver
    depths = await broker.queue_depths()
    assert depths[broker.settings.queue] == 0


async def test_garbage_message_goes_to_the_dead_letter_queue_and_the_worker_carries_on(
    workers: WorkerPool, store: NotificationStore, broker: Broker
) -> None:
    proc = await workers.start(concurrency=4)
    for body in (b"\x00\xffnot json", b'{"no": "id"}', b"[]"):
        await broker.publish_body(body)
    ids = await insert_and_publish(store, broker, [make_notification()])
    final = await wait_final(store, ids, timeout=20)
    assert final[ids[0]].status is Status.SENT
    await wait_for(
        lambda: _dead_depth(broker, 3), timeout=10, what="3 garbage messages dead-lettered"
    )
    assert await proc.healthy()


async def _dead_depth(broker: Broker, n: int) -> bool:
    return (await broker.queue_depths())[broker.settings.dead_letter_queue] >= n


@pytest.mark.parametrize("policy", ["resend", "fail"])
async def test_unknown_outcome_policy(
    policy: str, workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    await workers.start(concurrency=4, NOTIFIER_UNKNOWN_OUTCOME=policy)
    (note,) = [make_notification()]
    await insert_and_publish(store, None, [note])
    # a worker that died mid-push: its claim (attempt started, never finished) expires
    claim = await store.claim(note.id, "dead-worker-1-abc", utcnow(), 0.5)
    assert claim.won
    (n,) = (await wait_final(store, [note.id], timeout=20)).values()
    assert n.history[0].outcome == "unknown" and n.history[0].worker == "dead-worker-1-abc"
    if policy == "resend":
        assert n.status is Status.SENT and [h.outcome for h in n.history] == ["unknown", "sent"]
    else:
        assert n.status is Status.FAILED
        assert n.last_error is not None and n.last_error.code == "outcome_unknown"
        assert await emulator.control.delivery(note.id) is None  # at-most-once: not pushed
