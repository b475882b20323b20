"""The provider registry against the emulator and a real store: each app's pushes go out
under its own credential (else the environment's), a credential's in-flight pushes are
bounded, a refused credential turns unhealthy, holds its pushes and is probed, and a
changed credential serves new pushes while in-flight ones finish on the old client."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from notifier.credentials.model import ApnsCredential, FcmCredential
from notifier.credentials.sealing import Keyring, new_key, parse_key
from notifier.credentials.vault import set_credential
from notifier.metrics import CREDENTIAL_HEALTHY
from notifier.models import LastError, Platform, Status, utcnow
from notifier.providers.base import PushOutcome, PushResult
from notifier.providers.factory import build_providers
from notifier.providers.health import BUSY, CREDENTIAL_FAULT, HELD
from notifier.providers.registry import DEFAULT_APP, ProviderRegistry
from notifier.settings import Settings, load_settings
from notifier.store.base import NotificationStore
from notifier.store.factory import open_store
from tests.providers.support import fresh
from tests.store.conftest import insert, make_notification
from tests.support import wait_for


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[NotificationStore]:
    s = await open_store(make_settings())
    yield s
    await s.close()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(parse_key(new_key()))


async def fcm_app(
    emulator: Any, store: NotificationStore, keyring: Keyring, app: str
) -> tuple[str, dict[str, Any]]:
    """Give ``app`` an FCM project of its own; its project id and service account."""
    project = f"{app}-{secrets.token_hex(3)}"
    info = await emulator.control.add_fcm_project(project)
    await set_credential(store, keyring, app, FcmCredential.parse(info))
    return project, info


async def credential_of(emulator: Any, notification_id: str) -> str:
    delivery = await emulator.control.delivery(notification_id)
    assert delivery is not None, notification_id
    return str(delivery["credential"])


def healthy_gauge(app: str, provider: str) -> float:
    return float(CREDENTIAL_HEALTHY.labels(app, provider)._value.get())


async def test_each_app_pushes_under_its_own_credential_else_the_environments(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    shop, _ = await fcm_app(emulator, store, keyring, "shop")
    news, _ = await fcm_app(emulator, store, keyring, "news")
    settings = load_settings(emulator.env)
    default_project = (await emulator.control.credentials())["fcm"][0]["project_id"]
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        sent = {}
        for app in ("shop", "news", "plain"):
            n = fresh(Platform.FCM, app=app)
            result = await registry.send(n)
            assert result.outcome is PushOutcome.SENT, result
            sent[app] = n.id
    assert await credential_of(emulator, sent["shop"]) == shop
    assert await credential_of(emulator, sent["news"]) == news
    plain = await credential_of(emulator, sent["plain"])
    assert plain not in (shop, news) and plain == default_project


async def test_without_a_keyring_every_app_uses_the_environments_credential(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    shop, _ = await fcm_app(emulator, store, keyring, "shop")
    settings = load_settings(emulator.env)
    async with ProviderRegistry(settings, build_providers(settings)) as registry:
        n = fresh(Platform.FCM, app="shop")
        assert (await registry.send(n)).sent
    assert await credential_of(emulator, n.id) != shop


async def test_a_credential_takes_at_most_its_bound_of_pushes_at_once(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    """Slow answers for app slow's pushes: only ``credential_concurrency`` of them reach the
    provider, the rest are answered busy at once, and app quick's pushes go out meanwhile."""
    await fcm_app(emulator, store, keyring, "slow")
    await fcm_app(emulator, store, keyring, "quick")
    settings = load_settings(emulator.env, credential_concurrency=3)
    slow = [fresh(Platform.FCM, app="slow") for _ in range(8)]
    for n in slow:
        await emulator.control.slow(n.target.token, 1500)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        assert (await registry.send(fresh(Platform.FCM, app="slow"))).sent  # loaded
        slow_tasks = [asyncio.create_task(registry.send(n)) for n in slow]
        await asyncio.sleep(0)  # every slow push has asked for its slot
        quick = [await registry.send(fresh(Platform.FCM, app="quick")) for _ in range(5)]
        slow_results = await asyncio.gather(*slow_tasks)
    assert all(r.sent for r in quick)
    codes = sorted(str(r.code) for r in slow_results if not r.sent)
    assert sum(r.sent for r in slow_results) == 3
    assert codes == [BUSY] * 5


@pytest.mark.parametrize("app_credentials", [True, False], ids=["keyring", "no-keyring"])
async def test_the_environments_credential_takes_at_most_its_bound_of_pushes_at_once(
    emulator: Any, store: NotificationStore, keyring: Keyring, app_credentials: bool
) -> None:
    """The default serves every app without a credential of its own: slow answers on it
    reach the provider ``default_credential_concurrency`` at a time, the rest are answered
    busy at once (a slow or throttled default cannot take every worker slot), and an app
    with its own credential pushes meanwhile."""
    await fcm_app(emulator, store, keyring, "own")
    settings = load_settings(emulator.env, default_credential_concurrency=3)
    slow = [fresh(Platform.FCM, app=f"plain{i % 2}") for i in range(8)]
    for n in slow:
        await emulator.control.slow(n.target.token, 1500)
    if app_credentials:
        registry = ProviderRegistry(
            settings, build_providers(settings), store=store, keyring=keyring
        )
    else:
        registry = ProviderRegistry.fixed(settings, build_providers(settings))
    async with registry:
        for app in ("plain0", "plain1"):  # loaded
            assert (await registry.send(fresh(Platform.FCM, app=app))).sent
        slow_tasks = [asyncio.create_task(registry.send(n)) for n in slow]
        await asyncio.sleep(0)  # every slow push has asked for its slot
        own_app = "own" if app_credentials else "plain0"
        quick = [await registry.send(fresh(Platform.FCM, app=own_app)) for _ in range(3)]
        slow_results = await asyncio.gather(*slow_tasks)
    if app_credentials:
        assert all(r.sent for r in quick)
    else:  # one credential for all: the bound refuses the quick ones too
        assert [r.code for r in quick] == [BUSY] * 3
    assert sum(r.sent for r in slow_results) == 3
    assert sorted(str(r.code) for r in slow_results if not r.sent) == [BUSY] * 5


async def test_a_refused_credential_is_unhealthy_holds_pushes_and_heals_on_a_probe(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    project, _ = await fcm_app(emulator, store, keyring, "broken")
    settings = load_settings(emulator.env, credential_probe_seconds=0.5)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        assert (await registry.send(fresh(Platform.FCM, app="broken"))).sent
        assert healthy_gauge("broken", "fcm") == 1
        await emulator.control.fail_fcm(project, 403, "")
        refused = await registry.send(fresh(Platform.FCM, app="broken"))
        assert (refused.outcome, refused.code) == (PushOutcome.RETRY, CREDENTIAL_FAULT)
        assert healthy_gauge("broken", "fcm") == 0
        before = (await emulator.control.summary())["by_credential"]["fcm"][project]
        held = [await registry.send(fresh(Platform.FCM, app="broken")) for _ in range(5)]
        assert {r.code for r in held} == {HELD}  # no request made: the counts stand still
        assert (await emulator.control.summary())["by_credential"]["fcm"][project] == before
        # other apps are untouched
        assert (await registry.send(fresh(Platform.FCM, app="other"))).sent
        await emulator.control.heal_fcm(project)
        results: list[PushResult] = []

        async def probed_and_sent() -> bool:
            results.append(await registry.send(fresh(Platform.FCM, app="broken")))
            return results[-1].sent

        await wait_for(probed_and_sent, timeout=10, interval=0.1, what="a probe heals it")
        assert healthy_gauge("broken", "fcm") == 1
        assert (await registry.send(fresh(Platform.FCM, app="broken"))).sent
        assert healthy_gauge(DEFAULT_APP, "fcm") == 1


async def test_a_changed_credential_serves_new_pushes_while_in_flight_ones_finish(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    first, _ = await fcm_app(emulator, store, keyring, "rotating")
    settings = load_settings(emulator.env)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        in_flight = fresh(Platform.FCM, app="rotating")
        await emulator.control.slow(in_flight.target.token, 1000)
        assert (await registry.send(fresh(Platform.FCM, app="rotating"))).sent
        task = asyncio.create_task(registry.send(in_flight))
        await wait_for(lambda: registry.inflight("rotating", Platform.FCM) == 1, timeout=5)
        second, _ = await fcm_app(emulator, store, keyring, "rotating")
        registry.forget("rotating")  # what the watch does on the change
        after = fresh(Platform.FCM, app="rotating")
        assert (await registry.send(after)).sent
        assert (await task).sent  # finished on the old client, not cut off
    assert await credential_of(emulator, in_flight.id) == first
    assert await credential_of(emulator, after.id) == second


async def test_an_apps_credential_change_is_picked_up_by_the_watch(
    emulator: Any, store: NotificationStore, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("notifier.providers.registry.POLL_SECONDS", 0.2)
    settings = load_settings(emulator.env)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        before = fresh(Platform.FCM, app="late")
        assert (await registry.send(before)).sent  # the environment's, for now
        project, _ = await fcm_app(emulator, store, keyring, "late")
        sent: list[str] = []

        async def own_credential() -> bool:
            n = fresh(Platform.FCM, app="late")
            assert (await registry.send(n)).sent
            sent.append(n.id)
            return await credential_of(emulator, n.id) == project

        await wait_for(own_credential, timeout=10, interval=0.2, what="the new credential")
    assert await credential_of(emulator, before.id) != project


async def test_an_apps_apns_client_pushes_under_the_named_topic_else_the_first(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    topics = [f"com.example.{secrets.token_hex(3)}", f"com.example.{secrets.token_hex(3)}"]
    key = await emulator.control.add_apns_key(topics=topics)
    credential = ApnsCredential.parse(key["key_pem"], key["key_id"], key["team_id"], topics)
    await set_credential(store, keyring, "ios", credential)
    settings = load_settings(emulator.env)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        named = fresh(Platform.APNS, app="ios", apns_topic=topics[1])
        plain = fresh(Platform.APNS, app="ios")
        assert (await registry.send(named)).sent and (await registry.send(plain)).sent
    seen = {
        r["headers"].get("apns-id"): r["headers"].get("apns-topic")
        for r in await emulator.control.recent(200)
        if isinstance(r.get("headers"), dict)
    }
    assert seen.get(named.id) == topics[1] and seen.get(plain.id) == topics[0]
    assert await credential_of(emulator, named.id) == f"{key['team_id']}/{key['key_id']}"


async def test_a_tls_failure_makes_the_credential_unhealthy(emulator: Any) -> None:
    """Without the emulator's CA the handshake fails: the environment's credential turns
    unhealthy and its next pushes are held without a request."""
    env = {k: v for k, v in emulator.env.items() if k != "NOTIFIER_PROVIDER_CA_FILE"}
    settings = load_settings(env, credential_probe_seconds=60)
    async with ProviderRegistry(settings, build_providers(settings)) as registry:
        failed = await registry.send(fresh(Platform.APNS, app="any"))
        assert (failed.outcome, failed.code) == (PushOutcome.RETRY, "tls")
        assert healthy_gauge(DEFAULT_APP, "apns") == 0
        assert (await registry.send(fresh(Platform.APNS, app="other"))).code == HELD
        assert registry.health() == [
            {"app": DEFAULT_APP, "provider": "fcm", "healthy": True, "in_flight": 0},
            {"app": DEFAULT_APP, "provider": "apns", "healthy": False, "in_flight": 0},
        ]


async def held_in_store(store: NotificationStore, app: str, platform: Platform) -> str:
    """A notification of ``app`` held as retrying, due only in an hour; its id."""
    now = utcnow()
    n = make_notification(
        now,
        app=app,
        target=fresh(platform, app=app).target,
        status=Status.RETRYING,
        next_attempt_at=now + timedelta(hours=1),
        last_error=LastError(HELD, "held"),
        attempts=4,
    )
    await insert(store, n)
    return n.id


async def released(store: NotificationStore, nid: str) -> bool:
    n = await store.get(nid)
    assert n is not None and n.status is Status.RETRYING
    return n.next_attempt_at is not None and n.next_attempt_at <= utcnow()


async def test_a_healed_credential_releases_the_notifications_it_held(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    """A probe that heals an app's credential makes that app's held notifications due now
    (the sweeper republishes them within a round); another app's stay at their backoff."""
    project, _ = await fcm_app(emulator, store, keyring, "broken")
    mine = await held_in_store(store, "broken", Platform.FCM)
    other = await held_in_store(store, "other", Platform.FCM)
    settings = load_settings(emulator.env, credential_probe_seconds=0.3)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        await emulator.control.fail_fcm(project, 403, "")
        refused = await registry.send(fresh(Platform.FCM, app="broken"))
        assert refused.code == CREDENTIAL_FAULT
        assert not await released(store, mine)
        await emulator.control.heal_fcm(project)

        async def healed() -> bool:
            return (await registry.send(fresh(Platform.FCM, app="broken"))).sent

        await wait_for(healed, timeout=10, interval=0.1, what="a probe heals it")
        await wait_for(lambda: released(store, mine), timeout=5, what="released")
    assert not await released(store, other)


async def test_the_default_credential_healing_releases_every_app_held_on_it(
    emulator: Any, store: NotificationStore, keyring: Keyring
) -> None:
    default_project = (await emulator.control.credentials())["fcm"][0]["project_id"]
    plain = await held_in_store(store, "plain", Platform.FCM)
    apns = await held_in_store(store, "plain", Platform.APNS)
    settings = load_settings(emulator.env, credential_probe_seconds=0.3)
    async with ProviderRegistry(
        settings, build_providers(settings), store=store, keyring=keyring
    ) as registry:
        await emulator.control.fail_fcm(default_project, 403, "")
        try:
            refused = await registry.send(fresh(Platform.FCM, app="plain"))
            assert refused.code == CREDENTIAL_FAULT
        finally:
            await emulator.control.heal_fcm(default_project)

        async def healed() -> bool:
            return (await registry.send(fresh(Platform.FCM, app="another"))).sent

        await wait_for(healed, timeout=10, interval=0.1, what="a probe heals it")
        await wait_for(lambda: released(store, plain), timeout=5, what="released")
    assert not await released(store, apns)
