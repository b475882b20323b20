"""The admin API: admin keys only, credentials stored sealed, shown by fingerprint, bad
input refused naming the field with nothing changed."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from notifier.adminkeys import generate_admin_key
from notifier.apikeys import hash_key
from notifier.credentials.sealing import new_key
from notifier.models import utcnow
from tests.api.conftest import FCM_TOKEN, Api
from tests.credentials.keys import apns_pem, secret_parts, service_account

SECRETS_KEY = new_key()


@pytest.fixture
async def admin_api(api_factory: Callable[..., Any]) -> tuple[Api, dict[str, str]]:
    api: Api = await api_factory(secrets_key=SECRETS_KEY)
    key = generate_admin_key()
    await api.store.add_admin_key(hash_key(key), utcnow())
    return api, {"Authorization": f"Bearer {key}"}


def _apns_body(pem: str | None = None, **change: Any) -> dict[str, Any]:
    body = {
        "private_key": pem or apns_pem(),
        "key_id": "ABC123DEFG",
        "team_id": "TEAM123456",
        "topics": ["com.example.a"],
    }
    return {**body, **change}


def _path(app: str, provider: str) -> str:
    return f"/v1/admin/apps/{app}/credentials/{provider}"


async def test_put_get_delete_an_apns_credential(admin_api: tuple[Api, dict[str, str]]) -> None:
    api, admin = admin_api
    app = f"app-{secrets.token_hex(3)}"
    pem = apns_pem()
    r = await api.client.put(_path(app, "apns"), json=_apns_body(pem), headers=admin)
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["version"] == 1 and created["fingerprint"].startswith("SHA256:")
    r = await api.client.put(
        _path(app, "apns"), json=_apns_body(pem, topics=["com.example.a", "com.b"]), headers=admin
    )
    assert r.status == 200 and (await r.json())["version"] == 2
    r = await api.client.get(_path(app, "apns"), headers=admin)
    shown = await r.json()
    assert (shown["app"], shown["topics"], shown["fingerprint"]) == (
        app,
        ["com.example.a", "com.b"],
        created["fingerprint"],
    )
    text = await r.text()
    assert not any(part in text for part in secret_parts(pem))
    (record,) = await api.store.get_credentials(app)
    assert pem.encode() not in record.ciphertext
    r = await api.client.delete(_path(app, "apns"), headers=admin)
    assert r.status == 204
    r = await api.client.get(_path(app, "apns"), headers=admin)
    assert r.status == 404 and r.content_type == "application/problem+json"
    assert (await api.client.delete(_path(app, "apns"), headers=admin)).status == 404


async def test_put_an_fcm_service_account(admin_api: tuple[Api, dict[str, str]]) -> None:
    api, admin = admin_api
    body = {"service_account": service_account("proj-z")}
    r = await api.client.put(_path("a1", "fcm"), json=body, headers=admin)
    assert r.status == 201, await r.text()
    shown = await r.json()
    assert shown["project_id"] == "proj-z" and "private_key" not in shown


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (
            _apns_body("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            "/private_key",
        ),
        (_apns_body(key_id="short"), "/key_id"),
        (_apns_body(topics=[]), "/topics"),
        ({**_apns_body(), "extra": 1}, "/extra"),
    ],
)
async def test_bad_apns_input_is_422_naming_the_field_and_stores_nothing(
    admin_api: tuple[Api, dict[str, str]], body: dict[str, Any], pointer: str
) -> None:
    api, admin = admin_api
    r = await api.client.put(_path("bad", "apns"), json=body, headers=admin)
    assert r.status == 422 and r.content_type == "application/problem+json"
    problem = await r.json()
    assert [e["pointer"] for e in problem["errors"]] == [pointer]
    text = await r.text()
    assert not any(part in text for part in secret_parts(body["private_key"]))
    assert await api.store.get_credentials("bad") == []


async def test_a_bad_fcm_private_key_names_its_pointer(
    admin_api: tuple[Api, dict[str, str]],
) -> None:
    api, admin = admin_api
    pem = apns_pem()  # an EC key: FCM wants RSA
    body = {"service_account": {**service_account(), "private_key": pem}}
    r = await api.client.put(_path("bad", "fcm"), json=body, headers=admin)
    assert r.status == 422
    assert [e["pointer"] for e in (await r.json())["errors"]] == ["/service_account/private_key"]
    text = await r.text()
    assert not any(part in text for part in secret_parts(pem))
    assert await api.store.get_credentials("bad") == []


@pytest.mark.parametrize(
    ("extra", "pointer"),
    [
        ({"client_id": {"nested": 1}}, "/service_account/client_id"),
        ({"bad\u0000key": "x"}, "/service_account/bad\u0000key"),
    ],
)
async def test_a_service_accounts_other_fields_are_strings_as_its_schema_says(
    admin_api: tuple[Api, dict[str, str]], extra: dict[str, Any], pointer: str
) -> None:
    """Google's service-account files hold only strings; the schema says the other fields
    are strings without NUL, and the API refuses what the schema refuses, naming it."""
    api, admin = admin_api
    body = {"service_account": {**service_account(), **extra}}
    r = await api.client.put(_path("bad", "fcm"), json=body, headers=admin)
    assert r.status == 422 and r.content_type == "application/problem+json"
    assert [e["pointer"] for e in (await r.json())["errors"]] == [pointer]
    assert await api.store.get_credentials("bad") == []


async def test_an_app_key_cannot_reach_the_admin_api(
    admin_api: tuple[Api, dict[str, str]],
) -> None:
    api, _ = admin_api
    r = await api.client.put(_path(api.app_name, "apns"), json=_apns_body(), headers=api.auth)
    assert r.status == 403 and r.content_type == "application/problem+json"
    assert "admin key" in (await r.json())["detail"]
    assert await api.store.get_credentials(api.app_name) == []
    r = await api.client.get(_path(api.app_name, "apns"), headers=api.auth)
    assert r.status == 403


async def test_an_admin_key_cannot_send_notifications(
    admin_api: tuple[Api, dict[str, str]],
) -> None:
    api, admin = admin_api
    body = {"to": {"platform": "fcm", "token": FCM_TOKEN}, "data": {"k": "v"}}
    r = await api.client.post("/v1/notifications", json=body, headers=admin)
    assert r.status == 403 and r.content_type == "application/problem+json"
    r = await api.client.get("/v1/notifications", headers=admin)
    assert r.status == 403


async def test_unknown_and_missing_keys_are_401_on_admin_routes(
    admin_api: tuple[Api, dict[str, str]],
) -> None:
    api, _ = admin_api
    r = await api.client.get(_path("a", "fcm"), headers={"Authorization": "Bearer na_nope"})
    assert r.status == 401
    assert (await api.client.get(_path("a", "fcm"))).status == 401


async def test_without_a_secrets_key_put_is_503_and_stores_nothing(
    api_factory: Callable[..., Any],
) -> None:
    api: Api = await api_factory()
    key = generate_admin_key()
    await api.store.add_admin_key(hash_key(key), utcnow())
    admin = {"Authorization": f"Bearer {key}"}
    r = await api.client.put(_path("nokey", "apns"), json=_apns_body(), headers=admin)
    assert r.status == 503 and "NOTIFIER_SECRETS_KEY" in (await r.json())["detail"]
    assert await api.store.get_credentials("nokey") == []


@pytest.mark.parametrize("raw_app", ["%01ctl", "x" * 201, "%C2%85nel"])
async def test_a_bad_app_name_in_the_path_is_422_naming_it(
    admin_api: tuple[Api, dict[str, str]], raw_app: str
) -> None:
    api, admin = admin_api
    before = await api.store.list_credentials()
    for method in ("PUT", "GET", "DELETE"):
        r = await api.client.request(
            method, f"/v1/admin/apps/{raw_app}/credentials/apns", json=_apns_body(), headers=admin
        )
        assert r.status == 422, (method, await r.text())
        assert [e["pointer"] for e in (await r.json())["errors"]] == ["/path/app"]
    assert await api.store.list_credentials() == before


async def test_every_app_name_the_path_rule_allows_is_stored(
    admin_api: tuple[Api, dict[str, str]],
) -> None:
    """The path rule and the vault's rule are one: a soft hyphen (not "printable" to
    Python) once passed the path check and then failed in the vault, as a 500."""
    api, admin = admin_api
    r = await api.client.put(_path("%C2%ADshop", "apns"), json=_apns_body(), headers=admin)
    assert r.status == 201, await r.text()
    assert (await r.json())["app"] == "\u00adshop"
