"""Credential parsing: the shapes accepted, the faults named, the material never shown."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.credentials.model import (
    ApnsCredential,
    CredentialError,
    FcmCredential,
    Provider,
    credential_from_material,
)
from tests.credentials.keys import apns_pem, secret_parts, service_account, service_account_bytes


def test_an_fcm_service_account_parses_and_shows_no_key() -> None:
    cred = FcmCredential.parse(service_account_bytes("proj-a"))
    summary = cred.summary()
    assert summary["project_id"] == "proj-a" and summary["fingerprint"].startswith("SHA256:")
    text = repr(cred) + str(summary)
    assert not any(part in text for part in secret_parts(service_account()["private_key"]))
    assert credential_from_material(Provider.FCM, cred.material()).fingerprint == cred.fingerprint


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"project_id": ""}, "project_id"),
        ({"client_email": None}, "client_email"),
        ({"token_uri": "ftp://x"}, "token_uri"),
        ({"type": "authorized_user"}, "type"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
            "private_key",
        ),
        ({"private_key": apns_pem()}, "private_key"),  # an EC key: FCM needs RSA
    ],
)
def test_a_bad_service_account_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(CredentialError) as caught:
        FcmCredential.parse({**service_account(), **change})
    assert caught.value.field == field


def test_not_json_is_refused_without_quoting_it() -> None:
    with pytest.raises(CredentialError) as caught:
        FcmCredential.parse(b"{secret-ish garbage")
    assert "garbage" not in str(caught.value)


def test_an_apns_key_parses_with_its_ids_and_topics() -> None:
    pem = apns_pem()
    cred = ApnsCredential.parse(pem, "ABC123DEFG", "TEAM123456", ["com.a", "com.a.voip", "com.a"])
    assert cred.topics == ("com.a", "com.a.voip")
    assert cred.summary()["key_id"] == "ABC123DEFG"
    again = credential_from_material(Provider.APNS, cred.material())
    assert again.fingerprint == cred.fingerprint
    assert not any(part in repr(cred) + str(cred.summary()) for part in secret_parts(pem))


def test_the_fingerprint_is_the_public_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    one = ApnsCredential.parse(pem, "ABC123DEFG", "TEAM123456", ["com.a"])
    two = ApnsCredential.parse(pem, "ZZZ123DEFG", "TEAM123456", ["com.b"])
    other = ApnsCredential.parse(apns_pem(), "ABC123DEFG", "TEAM123456", ["com.a"])
    assert one.fingerprint == two.fingerprint != other.fingerprint


@pytest.mark.parametrize(
    ("pem", "key_id", "team_id", "topics", "field"),
    [
        ("not a key", "ABC123DEFG", "TEAM123456", ["com.a"], "private_key"),
        (None, "ABC123DEFG", "TEAM123456", ["com.a"], "private_key"),  # filled: a P-384 key
        (apns_pem(), "abc123defg", "TEAM123456", ["com.a"], "key_id"),
        (apns_pem(), "ABC123DEFG\n", "TEAM123456", ["com.a"], "key_id"),
        (apns_pem(), "ABC123DEFG", "TEAM12345", ["com.a"], "team_id"),
        (apns_pem(), "ABC123DEFG", "TEAM123456", [], "topics"),
        (apns_pem(), "ABC123DEFG", "TEAM123456", ["com a"], "topics"),
    ],
)
def test_a_bad_apns_credential_names_the_field(
    pem: str | None, key_id: str, team_id: str, topics: list[str], field: str
) -> None:
    if pem is None:
        pem = (
            ec.generate_private_key(ec.SECP384R1())
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
    with pytest.raises(CredentialError) as caught:
        ApnsCredential.parse(pem, key_id, team_id, topics)
    assert caught.value.field == field
    assert not any(part in str(caught.value) for part in secret_parts(pem))
