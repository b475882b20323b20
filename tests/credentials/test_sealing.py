"""Sealing at rest: AES-GCM bound to its app and provider, two keys during a rotation."""

from __future__ import annotations

import base64

import pytest

from notifier.credentials.sealing import Keyring, SealingError, key_id, new_key, parse_key


def _ring(previous: bytes | None = None) -> Keyring:
    return Keyring(parse_key(new_key()), previous)


def test_sealed_material_opens_with_the_same_app_and_provider() -> None:
    ring = _ring()
    sealed = ring.seal("a", "fcm", b"material")
    assert b"material" not in sealed.ciphertext
    assert sealed.key_id == ring.current_id
    assert ring.open("a", "fcm", sealed) == b"material"
    assert ring.seal("a", "fcm", b"material").ciphertext != sealed.ciphertext  # fresh nonce


@pytest.mark.parametrize(("app", "provider"), [("b", "fcm"), ("a", "apns"), ("a\x00", "fcm")])
def test_a_ciphertext_moved_to_another_app_or_provider_does_not_open(
    app: str, provider: str
) -> None:
    ring = _ring()
    sealed = ring.seal("a", "fcm", b"material")
    with pytest.raises(SealingError, match="does not authenticate"):
        ring.open(app, provider, sealed)


def test_the_previous_key_still_opens_and_an_unknown_key_is_named() -> None:
    old = _ring()
    sealed = old.seal("a", "fcm", b"material")
    rotating = _ring(previous=old.current)
    assert rotating.open("a", "fcm", sealed) == b"material"
    with pytest.raises(SealingError) as caught:
        _ring().open("a", "fcm", sealed)
    assert sealed.key_id in str(caught.value)
    assert "NOTIFIER_SECRETS_KEY" in str(caught.value)


@pytest.mark.parametrize(
    "text", ["", "short", base64.urlsafe_b64encode(b"x" * 31).decode(), "!" * 44]
)
def test_a_bad_key_is_refused_without_quoting_it(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_key(text)
    assert "32 random bytes" in str(caught.value)
    assert (text or "\x01") not in str(caught.value)


def test_the_key_id_reveals_nothing_of_the_key() -> None:
    key = parse_key(new_key())
    assert len(key_id(key)) == 8
    assert key_id(key) not in key.hex() and key_id(key) != key_id(parse_key(new_key()))
    assert key.hex() not in repr(Keyring(key))


def test_the_settings_hold_the_key_unseen_and_refuse_a_bad_one() -> None:
    from notifier.settings import SettingsError, load_settings

    key = new_key()
    settings = load_settings({"NOTIFIER_SECRETS_KEY": key})
    assert settings.secrets_key is not None and settings.secrets_key.get_secret_value() == key
    assert key not in repr(settings) and key not in settings.model_dump_json()
    bad = key[:-4]
    with pytest.raises(SettingsError) as caught:
        load_settings({"NOTIFIER_SECRETS_KEY": bad})
    assert str(caught.value).startswith("NOTIFIER_SECRETS_KEY: ") and bad not in str(caught.value)
    with pytest.raises(SettingsError, match=r"^NOTIFIER_SECRETS_KEY_PREVIOUS: "):
        load_settings({"NOTIFIER_SECRETS_KEY": key, "NOTIFIER_SECRETS_KEY_PREVIOUS": "x"})
    with pytest.raises(SettingsError, match=r"^NOTIFIER_SECRETS_KEY: is required"):
        load_settings({"NOTIFIER_SECRETS_KEY_PREVIOUS": key})
