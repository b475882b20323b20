"""Per-app credentials end to end (issue 16): a real worker process, broker, store and
emulator. Three apps with their own FCM projects and APNs teams each get every push under
their own credential; one revoked mid-run turns unhealthy within 10 s, holds its
notifications as retrying, and delivers them once replaced, with no worker restart. A
throttled credential does not hold up another app's notifications."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from notifier.broker import Broker
from notifier.credentials.model import ApnsCredential, FcmCredential
from notifier.credentials.sealing import Keyring, new_key, parse_key
from notifier.credentials.vault import set_credential
from notifier.models import Platform, Status, utcnow
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import (
    WorkerPool,
    WorkerProc,
    insert_and_publish,
    make_notification,
    wait_final,
)

APPS = ("alpha", "bravo", "charlie")


async def give_credentials(
    emulator: Any, store: NotificationStore, keyring: Keyring, app: str
) -> dict[Platform, str]:
    """A new FCM project and APNs key for ``app``, stored with the vault; the names the
    emulator counts them by (project id, ``TEAM/KEY``)."""
    project = f"{app}-{secrets.token_hex(3)}"
    info = await emulator.control.add_fcm_project(project)
    await set_credential(store, keyring, app, FcmCredential.parse(info))
    topic = f"com.example.{app}.{secrets.token_hex(3)}"
    key = await emulator.control.add_apns_key(topics=[topic])
    apns = ApnsCredential.parse(key["key_pem"], key["key_id"], key["team_id"], [topic])
    await set_credential(store, keyring, app, apns)
    return {Platform.FCM: project, Platform.APNS: f"{key['team_id']}/{key['key_id']}"}


async def gauge(worker: WorkerProc, name: str, app: str, provider: str) -> float | None:
    text = (await worker.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"app": app, "provider": provider}:
                return float(sample.value)
    return None


async def stored_health(store: NotificationStore, app: str, provider: str, healthy: bool) -> bool:
    records = await store.get_credential_health([app])
    return any(r.provider == provider and r.healthy is healthy for r in records)


async def test_three_apps_each_push_under_their_own_credential_and_a_revoked_one_holds(
    store: NotificationStore, broker: Broker, workers: WorkerPool, emulator: Any
) -> None:
    secrets_key = new_key()
    keyring = Keyring(parse_key(secrets_key))
    names = {app: await give_credentials(emulator, store, keyring, app) for app in APPS}
    worker = await workers.start(
        concurrency=16, NOTIFIER_SECRETS_KEY=secrets_key, NOTIFIER_CREDENTIAL_PROBE_SECONDS=1
    )
    notes = [
        make_notification(platform, app=app)
        for app in APPS
        for platform in Platform
        for _ in range(10)
    ]
    done = await wait_final(store, await insert_and_publish(store, broker, notes))
    assert {n.status for n in done.values()} == {Status.SENT}
    for n in notes:
        delivery = await emulator.control.delivery(n.id)
        assert delivery is not None and delivery["credential"] == names[n.app][n.target.platform]
    by_credential = (await emulator.control.summary())["by_credential"]
    for app in APPS:
        assert by_credential["fcm"][names[app][Platform.FCM]]["accepted"] >= 10
        assert by_credential["apns"][names[app][Platform.APNS]]["accepted"] >= 10

    # charlie's FCM project is revoked mid-run
    project = names["charlie"][Platform.FCM]
    await emulator.control.revoke_fcm(project)
    held = [make_notification(Platform.FCM, app="charlie") for _ in range(10)]
    others = [make_notification(Platform.FCM, app=app) for app in ("alpha", "bravo")]
    await insert_and_publish(store, broker, held + others)

    async def unhealthy() -> bool:
        return await gauge(worker, "notifier_credential_healthy", "charlie", "fcm") == 0

    await wait_for(unhealthy, timeout=10, interval=0.2, what="charlie's fcm unhealthy")
    # and recorded in the store, where the API's health route reads it
    await wait_for(
        lambda: stored_health(store, "charlie", "fcm", False), timeout=5, what="health record"
    )
    assert await gauge(worker, "notifier_credential_healthy", "alpha", "fcm") == 1
    shown = {(c["app"], c["provider"]): c["healthy"] for c in (await worker.stats())["credentials"]}
    assert shown[("charlie", "fcm")] is False and shown[("alpha", "fcm")] is True
    others_done = await wait_final(store, [n.id for n in others])
    assert {n.status for n in others_done.values()} == {Status.SENT}

    async def all_held_retrying() -> bool:
        found = [await store.get(n.id) for n in held]
        return all(n is not None and n.status is Status.RETRYING for n in found)

    await wait_for(all_held_retrying, timeout=30, interval=0.2, what="held as retrying")

    # replaced: a new service account of the same project, set through the vault
    info = await emulator.control.add_fcm_project(project)
    await set_credential(store, keyring, "charlie", FcmCredential.parse(info))
    delivered = await wait_final(store, [n.id for n in held], timeout=60)
    assert {n.status for n in delivered.values()} == {Status.SENT}
    for n in held:
        delivery = await emulator.control.delivery(n.id)
        assert delivery is not None and delivery["credential"] == project
    assert await gauge(worker, "notifier_credential_healthy", "charlie", "fcm") == 1
    await wait_for(
        lambda: stored_health(store, "charlie", "fcm", True), timeout=5, what="healed record"
    )
    assert worker.process.returncode is None  # the same worker, never restarted
    last_success = await gauge(
        worker, "notifier_credential_last_success_timestamp_seconds", "charlie", "fcm"
    )
    assert last_success is not None and last_success > 0


async def test_a_throttled_credential_holds_its_app_while_another_app_flows(
    store: NotificationStore, broker: Broker, workers: WorkerPool, emulator: Any
) -> None:
    """bravo's project answers 429 for everything; alpha's notifications, published after
    bravo's backlog, all go out; none of bravo's fail, they are held as retrying."""
    secrets_key = new_key()
    keyring = Keyring(parse_key(secrets_key))
    names = {app: await give_credentials(emulator, store, keyring, app) for app in APPS[:2]}
    await emulator.control.throttle_fcm(names["bravo"][Platform.FCM], retry_after=1)
    await workers.start(concurrency=16, NOTIFIER_SECRETS_KEY=secrets_key)
    backlog = [make_notification(Platform.FCM, app="bravo") for _ in range(200)]
    await insert_and_publish(store, broker, backlog)
    flowing = [make_notification(Platform.FCM, app="alpha") for _ in range(50)]
    done = await wait_final(store, await insert_and_publish(store, broker, flowing))
    assert {n.status for n in done.values()} == {Status.SENT}
    statuses = {n.status for n in [await store.get(b.id) for b in backlog] if n is not None}
    assert Status.FAILED not in statuses and Status.SENT not in statuses
    received = await emulator.control.deliveries()
    assert not any(b.id in received for b in backlog)
    await emulator.control.heal_fcm(names["bravo"][Platform.FCM])


async def test_a_slow_credential_takes_only_its_bound_of_slots_and_another_app_overtakes(
    store: NotificationStore, broker: Broker, workers: WorkerPool, emulator: Any
) -> None:
    """bravo's pushes each take 4 s to answer, and bravo's backlog is ahead of alpha's in the
    queue. With 16 slots and at most 4 pushes per credential in flight, bravo's others are
    held as retrying at once, so alpha's all go out while most of bravo's still wait
    (without the bound, bravo's backlog would fill every slot and drain first)."""
    secrets_key = new_key()
    keyring = Keyring(parse_key(secrets_key))
    for app in APPS[:2]:
        await give_credentials(emulator, store, keyring, app)
    backlog = [make_notification(Platform.FCM, app="bravo") for _ in range(80)]
    for n in backlog:
        await emulator.control.slow(n.target.token, 4000)
    # one id per message: a message's ids are claimed in parts that wait for as many free
    # slots (workers/consumer.py), so a 50-id message of alpha's would wait behind bravo's
    # four slow pushes for a whole part's worth of slots; that is the consumer's, not this
    await insert_and_publish(store, broker, backlog, per_message=1)
    flowing = [make_notification(Platform.FCM, app="alpha") for _ in range(40)]
    await insert_and_publish(store, broker, flowing, per_message=1)
    await workers.start(
        concurrency=16, NOTIFIER_SECRETS_KEY=secrets_key, NOTIFIER_CREDENTIAL_CONCURRENCY=4
    )
    done = await wait_final(store, [n.id for n in flowing], timeout=120)
    assert {n.status for n in done.values()} == {Status.SENT}
    bravo = [await store.get(n.id) for n in backlog]
    sent = sum(1 for n in bravo if n is not None and n.status is Status.SENT)
    # bounded: 4 of bravo's every 4 s; unbounded, bravo's backlog fills every slot and
    # drains first (78 of 80 sent when alpha's were done)
    assert sent <= len(backlog) // 2, sent
    assert all(n is not None and n.status is not Status.FAILED for n in bravo)
    held = [n for n in bravo if n is not None and n.last_error is not None]
    assert any(n.last_error and n.last_error.code == "credential_busy" for n in held)
    await emulator.control.clear_faults()


async def test_held_notifications_go_out_within_seconds_of_the_credential_being_replaced(
    store: NotificationStore, broker: Broker, workers: WorkerPool, emulator: Any
) -> None:
    """Held notifications wait at their backoff (here at least 10 minutes: the probe
    interval floors a held push's retry); replacing the credential releases them, so they
    are delivered within the watch's poll (5 s) plus a sweeper round, not 10 minutes later."""
    secrets_key = new_key()
    keyring = Keyring(parse_key(secrets_key))
    names = await give_credentials(emulator, store, keyring, "charlie")
    project = names[Platform.FCM]
    await emulator.control.revoke_fcm(project)
    await workers.start(
        concurrency=8,
        NOTIFIER_SECRETS_KEY=secrets_key,
        NOTIFIER_CREDENTIAL_PROBE_SECONDS=600,
        NOTIFIER_RETRY_BASE_SECONDS=600,
        NOTIFIER_RETRY_MAX_SECONDS=900,
    )
    held = [make_notification(Platform.FCM, app="charlie") for _ in range(5)]
    await insert_and_publish(store, broker, held)

    async def all_held_far_off() -> bool:
        # the refused first push's backoff is jittered: it may come back due soon, and is
        # then held again at the probe floor; wait until every one waits past the timeout below
        cutoff = utcnow() + timedelta(seconds=30)
        found = [await store.get(n.id) for n in held]
        return all(
            n is not None
            and n.status is Status.RETRYING
            and n.next_attempt_at is not None
            and n.next_attempt_at > cutoff
            for n in found
        )

    await wait_for(all_held_far_off, timeout=60, interval=0.2, what="held far off")
    info = await emulator.control.add_fcm_project(project)
    await set_credential(store, keyring, "charlie", FcmCredential.parse(info))
    replaced = time.monotonic()
    delivered = await wait_final(store, [n.id for n in held], timeout=20)
    assert {n.status for n in delivered.values()} == {Status.SENT}
    assert time.monotonic() - replaced < 20
