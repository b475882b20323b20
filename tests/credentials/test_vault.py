"""The vault on each real store: set and load, the change watch, the key rotation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notifier.credentials import vault
from notifier.credentials.model import ApnsCredential, FcmCredential, Provider
from notifier.credentials.sealing import Keyring, SealingError, new_key, parse_key
from notifier.credentials.vault import Change, CredentialWatch
from notifier.models import utcnow
from notifier.store.base import NotificationStore
from tests.credentials.keys import apns_pem, service_account


def _ring(previous: Keyring | None = None) -> Keyring:
    return Keyring(parse_key(new_key()), None if previous is None else previous.current)


def _apns(topic: str = "com.a") -> ApnsCredential:
    return ApnsCredential.parse(apns_pem(), "ABC123DEFG", "TEAM123456", [topic])


async def test_set_then_load_gives_back_the_credentials(store: NotificationStore) -> None:
    ring = _ring()
    fcm = FcmCredential.parse(service_account("proj-a"))
    apns = _apns()
    await vault.set_credential(store, ring, "a", fcm)
    info = await vault.set_credential(store, ring, "a", apns)
    assert (info.provider, info.version, info.public["topics"]) == (Provider.APNS, 1, ["com.a"])
    loaded = await vault.load_credentials(store, ring, "a")
    fcm_back, apns_back = loaded[Provider.FCM], loaded[Provider.APNS]
    assert isinstance(fcm_back, FcmCredential) and fcm_back.info == fcm.info
    assert isinstance(apns_back, ApnsCredential)
    assert apns_back.private_key_pem == apns.private_key_pem
    assert await vault.load_credentials(store, ring, "b") == {}
    stored = await store.get_credentials("a")
    assert all(apns.private_key_pem.encode() not in r.ciphertext for r in stored)


async def test_a_record_copied_onto_another_app_does_not_open(store: NotificationStore) -> None:
    ring = _ring()
    await vault.set_credential(store, ring, "a", _apns())
    (record,) = await store.get_credentials("a")
    await store.put_credential(
        "b",
        "apns",
        secrets_key_id=record.secrets_key_id,
        ciphertext=record.ciphertext,
        public=record.public,
        now=utcnow(),
    )
    with pytest.raises(SealingError, match="does not authenticate"):
        await vault.load_credentials(store, ring, "b")


async def test_the_watch_reports_each_change_once(
    store: NotificationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = _ring()
    await vault.set_credential(store, ring, "a", _apns())
    watch = CredentialWatch(store)
    assert await watch.poll() == [Change("a", Provider.APNS, 1, False)]
    assert await watch.poll() == []  # the overlap re-reads it; the version says it is known
    await vault.set_credential(store, ring, "a", _apns("com.b"))
    await vault.set_credential(store, ring, "b", FcmCredential.parse(service_account()))
    changes = await watch.poll()
    assert sorted(changes, key=lambda c: c.app) == [
        Change("a", Provider.APNS, 2, False),
        Change("b", Provider.FCM, 1, False),
    ]
    assert await vault.delete_credential(store, "a", Provider.APNS)
    assert await watch.poll() == [Change("a", Provider.APNS, 3, True)]
    assert await watch.poll() == []


async def test_the_watch_sees_a_change_stamped_a_little_in_the_past(
    store: NotificationStore,
) -> None:
    """A writer whose clock is behind (or whose write commits late) is still seen."""
    watch = CredentialWatch(store)
    assert await watch.poll() == []
    await watch.poll()
    skewed = utcnow() - timedelta(seconds=vault.POLL_OVERLAP_SECONDS / 2)
    await store.put_credential(
        "a", "fcm", secrets_key_id="k", ciphertext=b"x", public={}, now=skewed
    )
    assert await watch.poll() == [Change("a", Provider.FCM, 1, False)]


async def test_rotation_re_seals_everything_under_the_new_key(store: NotificationStore) -> None:
    old = _ring()
    await vault.set_credential(store, old, "a", _apns())
    await vault.set_credential(store, old, "b", FcmCredential.parse(service_account()))
    new = _ring(previous=old)
    # meanwhile, reading works with either key
    assert set(await vault.load_credentials(store, new, "a")) == {Provider.APNS}
    report = await vault.rotate_key(store, new)
    assert (report.rotated, report.current, report.key_id) == (2, 0, new.current_id)
    assert {r.secrets_key_id for r in await store.list_credentials()} == {new.current_id}
    only_new = Keyring(new.current)
    assert set(await vault.load_credentials(store, only_new, "b")) == {Provider.FCM}
    with pytest.raises(SealingError):
        await vault.load_credentials(store, old, "a")
    again = await vault.rotate_key(store, new)
    assert (again.rotated, again.current) == (0, 2)


async def test_rotation_never_undoes_a_set_that_lands_meanwhile(
    store: NotificationStore,
) -> None:
    old = _ring()
    await vault.set_credential(store, old, "a", _apns("com.old"))
    new = _ring(previous=old)
    real_list = store.list_credentials

    async def list_then_set() -> list:  # type: ignore[type-arg]
        records = await real_list()
        await vault.set_credential(store, new, "a", _apns("com.new"))  # lands after the read
        return records

    store.list_credentials = list_then_set  # type: ignore[method-assign]
    report = await vault.rotate_key(store, new)
    assert (report.rotated, report.current) == (0, 1)
    (record,) = await store.get_credentials("a")
    assert record.public["topics"] == ["com.new"] and record.version == 2


async def test_rotation_without_the_old_key_names_the_credential(
    store: NotificationStore,
) -> None:
    await vault.set_credential(store, _ring(), "a", _apns())
    with pytest.raises(SealingError, match="NOTIFIER_SECRETS_KEY_PREVIOUS"):
        await vault.rotate_key(store, _ring())
