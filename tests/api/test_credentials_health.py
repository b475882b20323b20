"""``GET /v1/apps/me/credentials/health``: per provider, the calling app's credential (its
own or the environment's) and its health as the workers last wrote it to the store."""

from __future__ import annotations

from datetime import timedelta

from notifier.models import utcnow
from notifier.providers.health import DEFAULT_APP
from notifier.store.base import CredentialHealthRecord
from tests.api.conftest import Api

PATH = "/v1/apps/me/credentials/health"


def _auth(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.key}"}


async def test_health_shows_own_and_environment_credentials_as_workers_reported(
    api: Api,
) -> None:
    now = utcnow().replace(microsecond=0)
    await api.store.put_credential(
        api.app_name, "fcm", secrets_key_id="k1", ciphertext=b"x", public={}, now=now
    )
    refused = CredentialHealthRecord(api.app_name, "fcm", False, now, "config_error")
    await api.store.put_credential_health(refused)
    await api.store.put_credential_health(
        CredentialHealthRecord(DEFAULT_APP, "apns", True, now - timedelta(seconds=9))
    )
    # the environment's fcm report does not apply: this app has its own fcm credential
    await api.store.put_credential_health(CredentialHealthRecord(DEFAULT_APP, "fcm", True, now))
    r = await api.client.get(PATH, headers=_auth(api))
    assert r.status == 200, await r.text()
    body = await r.json()
    stamp = now.isoformat().replace("+00:00", "Z")
    env_stamp = (now - timedelta(seconds=9)).isoformat().replace("+00:00", "Z")
    assert body == {
        "app": api.app_name,
        "credentials": [
            {
                "provider": "fcm",
                "own": True,
                "healthy": False,
                "changed_at": stamp,
                "code": "config_error",
            },
            {
                "provider": "apns",
                "own": False,
                "healthy": True,
                "changed_at": env_stamp,
                "code": None,
            },
        ],
    }


async def test_health_of_an_app_nobody_reported_on_is_unknown_and_needs_a_key(api: Api) -> None:
    other = await api.new_key(f"{api.app_name}-other")
    r = await api.client.get(PATH, headers={"Authorization": f"Bearer {other}"})
    assert r.status == 200
    body = await r.json()
    assert [c["healthy"] for c in body["credentials"]] in ([None, None], [True, True])
    assert [c["own"] for c in body["credentials"]] == [False, False]
    r = await api.client.get(PATH)
    assert r.status == 401
