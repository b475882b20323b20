"""The emulator over real sockets: strict like APNs and FCM, faults, auth switches, counting.

The client is httpx (HTTP/2) trusting only the emulator's generated CA, as the product's
clients do. The session's emulator is shared: each test starts from a reset state.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from emulator import main as emulator_main
from emulator.testing import EmulatorHandle

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEVICE = "ab" * 32
FCM_TOKEN = "fcm-device-token-0001"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def _account(emu: EmulatorHandle) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(Path(emu.env["NOTIFIER_FCM_CREDENTIALS"]).read_text())
    return info


def _assertion(info: dict[str, Any], *, key: Any = None, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": info["client_email"], "aud": info["token_uri"], "scope": SCOPE}
    claims |= {"iat": now, "exp": now + 3600, **overrides}
    signing_key = key if key is not None else info["private_key"]
    headers = {"kid": info["private_key_id"]}
    return jwt.encode(claims, signing_key, algorithm="RS256", headers=headers)


async def _token_request(client: httpx.AsyncClient, assertion: str) -> httpx.Response:
    return await client.post("/token", data={"grant_type": GRANT, "assertion": assertion})


async def _access_token(client: httpx.AsyncClient, emu: EmulatorHandle) -> str:
    answer = await _token_request(client, _assertion(_account(emu)))
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def _provider_jwt(emu: EmulatorHandle, *, key: Any = None, iat: int | None = None) -> str:
    env = emu.env
    signing_key = key if key is not None else Path(env["NOTIFIER_APNS_KEY_FILE"]).read_text()
    claims = {"iss": env["NOTIFIER_APNS_TEAM_ID"], "iat": iat or int(time.time())}
    return jwt.encode(
        claims, signing_key, algorithm="ES256", headers={"kid": env["NOTIFIER_APNS_KEY_ID"]}
    )


def _apns_headers(emu: EmulatorHandle, **overrides: str) -> dict[str, str]:
    headers = {
        "authorization": f"bearer {_provider_jwt(emu)}",
        "apns-topic": emu.env["NOTIFIER_APNS_TOPIC"],
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-id": str(uuid.uuid4()),
    }
    headers.update(overrides)
    return headers


ALERT = {"aps": {"alert": {"title": "Hi", "body": "there"}}}


async def _push(
    client: httpx.AsyncClient,
    emu: EmulatorHandle,
    token: str = DEVICE,
    payload: Any = None,
    **headers: str,
) -> httpx.Response:
    body = json.dumps(ALERT if payload is None else payload).encode()
    return await client.post(
        f"/3/device/{token}", content=body, headers=_apns_headers(emu, **headers)
    )


async def _send(
    client: httpx.AsyncClient, emu: EmulatorHandle, message: dict[str, Any], access: str
) -> httpx.Response:
    project = _account(emu)["project_id"]
    return await client.post(
        f"/v1/projects/{project}/messages:send",
        json={"message": message},
        headers={"authorization": f"Bearer {access}"},
    )


# token endpoint ----------------------------------------------------------------------------


async def test_token_endpoint_grants_a_correct_assertion(client, emu) -> None:
    answer = await _token_request(client, _assertion(_account(emu)))
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]


def _other_rsa_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("bad_signature", "invalid_grant"),
        ("bad_aud", "invalid_grant"),
        ("expired", "invalid_grant"),
        ("bad_scope", "invalid_scope"),
        ("unknown_issuer", "invalid_grant"),
    ],
)
async def test_token_endpoint_refuses_a_bad_assertion(client, emu, case, error) -> None:
    info = _account(emu)
    now = int(time.time())
    assertion = {
        "bad_signature": lambda: _assertion(info, key=_other_rsa_key()),
        "bad_aud": lambda: _assertion(info, aud="https://example.com/token"),
        "expired": lambda: _assertion(info, iat=now - 7200, exp=now - 3600),
        "bad_scope": lambda: _assertion(info, scope="https://www.googleapis.com/auth/drive"),
        "unknown_issuer": lambda: _assertion(info, iss="someone@else.iam.gserviceaccount.com"),
    }[case]()
    answer = await _token_request(client, assertion)
    assert answer.status_code == 400
    assert answer.json()["error"] == error


async def test_token_endpoint_refuses_another_grant_type(client, emu) -> None:
    answer = await client.post("/token", data={"grant_type": "password", "assertion": "x"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


async def test_google_auth_library_gets_a_token(emu) -> None:
    import google.auth.transport.requests
    import requests
    from google.oauth2 import service_account

    creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        _account(emu), scopes=[SCOPE]
    )
    session = requests.Session()
    session.trust_env = False
    session.verify = str(emu.ca_file)
    creds.refresh(google.auth.transport.requests.Request(session))
    assert creds.token and creds.valid


# APNs ----------------------------------------------------------------------------------


async def test_apns_accepts_a_valid_push_over_http2_and_echoes_apns_id(client, emu) -> None:
    apns_id = str(uuid.uuid4())
    answer = await _push(client, emu, **{"apns-id": apns_id})
    assert answer.http_version == "HTTP/2"
    assert answer.status_code == 200
    assert answer.headers["apns-id"] == apns_id
    assert answer.content == b""


async def test_apns_accepts_a_background_push(client, emu) -> None:
    payload = {"aps": {"content-available": 1}, "k": "v"}
    answer = await _push(
        client, emu, payload=payload, **{"apns-push-type": "background", "apns-priority": "5"}
    )
    assert answer.status_code == 200


def _other_ec_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _malformed(emu: EmulatorHandle, case: str) -> tuple[str, Any, dict[str, str]]:
    """(device token, payload, header overrides) of one malformed push."""
    background = {"apns-push-type": "background"}
    cases: dict[str, tuple[str, Any, dict[str, str]]] = {
        "short_token": ("abcd", None, {}),
        "non_hex_token": ("zz" * 32, None, {}),
        "bad_topic": (DEVICE, None, {"apns-topic": "com.example.other"}),
        "bad_jwt": (
            DEVICE,
            None,
            {"authorization": f"bearer {_provider_jwt(emu, key=_other_ec_key())}"},
        ),
        "expired_jwt": (
            DEVICE,
            None,
            {"authorization": f"bearer {_provider_jwt(emu, iat=int(time.time()) - 3700)}"},
        ),
        "garbage_jwt": (DEVICE, None, {"authorization": "bearer not.a.jwt"}),
        "oversize": (DEVICE, {"aps": {"alert": "x" * 4100}}, {}),
        "background_priority_10": (
            DEVICE,
            {"aps": {"content-available": 1}},
            {**background, "apns-priority": "10"},
        ),
        "background_without_content_available": (
            DEVICE,
            {"aps": {}},
            {**background, "apns-priority": "5"},
        ),
        "bad_priority": (DEVICE, None, {"apns-priority": "7"}),
        "bad_push_type": (DEVICE, None, {"apns-push-type": "telepathy"}),
        "bad_apns_id": (DEVICE, None, {"apns-id": "not-a-uuid"}),
        "long_collapse_id": (DEVICE, None, {"apns-collapse-id": "c" * 65}),
        "no_aps": (DEVICE, {"hello": "world"}, {}),
    }
    return cases[case]


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("short_token", 400, "BadDeviceToken"),
        ("non_hex_token", 400, "BadDeviceToken"),
        ("bad_topic", 400, "BadTopic"),
        ("bad_jwt", 403, "InvalidProviderToken"),
        ("expired_jwt", 403, "ExpiredProviderToken"),
        ("garbage_jwt", 403, "InvalidProviderToken"),
        ("oversize", 413, "PayloadTooLarge"),
        ("background_priority_10", 400, "BadPriority"),
        ("background_without_content_available", 400, "InvalidPushType"),
        ("bad_priority", 400, "BadPriority"),
        ("bad_push_type", 400, "InvalidPushType"),
        ("bad_apns_id", 400, "BadMessageId"),
        ("long_collapse_id", 400, "BadCollapseId"),
        ("no_aps", 400, "BadPayload"),
    ],
)
async def test_apns_rejects_a_malformed_push(client, emu, case, status, reason) -> None:
    token, payload, overrides = _malformed(emu, case)
    answer = await _push(client, emu, token=token, payload=payload, **overrides)
    assert (answer.status_code, answer.json()["reason"]) == (status, reason)
    assert (await emu.control.summary())["by_platform"]["apns"]["rejected"] == 1


async def test_apns_without_authorization_is_missing_provider_token(client, emu) -> None:
    headers = _apns_headers(emu)
    del headers["authorization"]
    answer = await client.post(f"/3/device/{DEVICE}", json=ALERT, headers=headers)
    assert (answer.status_code, answer.json()["reason"]) == (403, "MissingProviderToken")


async def test_apns_refuses_http1(emu) -> None:
    context = ssl.create_default_context(cafile=str(emu.ca_file))
    async with httpx.AsyncClient(verify=context, trust_env=False) as http1:
        answer = await http1.post(
            f"{emu.endpoint}/3/device/{DEVICE}", json=ALERT, headers=_apns_headers(emu)
        )
    assert answer.status_code == 505


# FCM -----------------------------------------------------------------------------------

MESSAGE = {
    "token": FCM_TOKEN,
    "notification": {"title": "Hi", "body": "there"},
    "data": {"notification_id": "n-1", "k": "v"},
    "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "c"},
}


async def test_fcm_accepts_a_valid_message(client, emu) -> None:
    answer = await _send(client, emu, MESSAGE, await _access_token(client, emu))
    assert answer.status_code == 200
    project = _account(emu)["project_id"]
    assert answer.json()["name"].startswith(f"projects/{project}/messages/")


@pytest.mark.parametrize("access", ["", "ya29.made-up-token"])
async def test_fcm_without_a_valid_access_token_is_unauthenticated(client, emu, access) -> None:
    answer = await _send(client, emu, MESSAGE, access)
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
    assert "details" not in error


async def test_fcm_another_project_is_permission_denied(client, emu) -> None:
    access = await _access_token(client, emu)
    answer = await client.post(
        "/v1/projects/someone-else/messages:send",
        json={"message": MESSAGE},
        headers={"authorization": f"Bearer {access}"},
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    "message",
    [
        {**MESSAGE, "topic": "news"},  # two targets
        {k: v for k, v in MESSAGE.items() if k != "token"},  # no target
        {**MESSAGE, "data": {"count": 3}},  # non-string data value
        {**MESSAGE, "data": {"google.x": "v"}},  # reserved key
        {**MESSAGE, "android": {"priority": "URGENT"}},
        {**MESSAGE, "android": {"ttl": "3600"}},
        {**MESSAGE, "data": {"big": "x" * 4100}},
        {**MESSAGE, "registration_ids": ["a", "b"]},  # unknown field
    ],
    ids=[
        "two_targets",
        "no_target",
        "int_data",
        "reserved_key",
        "priority",
        "ttl",
        "size",
        "unknown",
    ],
)
async def test_fcm_rejects_a_bad_shape_with_field_violations(client, emu, message) -> None:
    answer = await _send(client, emu, message, await _access_token(client, emu))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert [d["@type"] for d in error["details"]] == [BAD_REQUEST]
    assert error["details"][0]["fieldViolations"]


async def test_fcm_rejects_a_malformed_token_as_token_level_invalid_argument(client, emu) -> None:
    answer = await _send(
        client, emu, {**MESSAGE, "token": "bad token!"}, await _access_token(client, emu)
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["details"] == [
        {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}
    ]


# faults --------------------------------------------------------------------------------


async def test_dead_token_is_410_unregistered_on_apns_and_404_on_fcm(client, emu) -> None:
    await emu.control.dead(DEVICE, since_ms=1767225600000)
    await emu.control.dead(FCM_TOKEN)
    answer = await _push(client, emu)
    assert answer.status_code == 410
    assert answer.json() == {"reason": "Unregistered", "timestamp": 1767225600000}
    answer = await _send(client, emu, MESSAGE, await _access_token(client, emu))
    assert answer.status_code == 404
    assert answer.json()["error"]["details"][0]["errorCode"] == "UNREGISTERED"


async def test_bad_token_fault(client, emu) -> None:
    await emu.control.bad(DEVICE)
    await emu.control.bad(FCM_TOKEN)
    answer = await _push(client, emu)
    assert (answer.status_code, answer.json()["reason"]) == (400, "BadDeviceToken")
    answer = await _send(client, emu, MESSAGE, await _access_token(client, emu))
    assert answer.status_code == 400
    assert answer.json()["error"]["details"] == [
        {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}
    ]


async def test_flaky_token_fails_n_times_then_succeeds(client, emu) -> None:
    await emu.control.flaky(DEVICE, 2)
    await emu.control.flaky(FCM_TOKEN, 1)
    statuses = [(await _push(client, emu)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    access = await _access_token(client, emu)
    first = await _send(client, emu, MESSAGE, access)
    assert first.status_code == 503
    assert first.json()["error"]["status"] == "UNAVAILABLE"
    assert (await _send(client, emu, MESSAGE, access)).status_code == 200


async def test_flaky_token_may_send_retry_after_with_its_503(client, emu) -> None:
    await emu.control.flaky(DEVICE, 1, retry_after=1)
    await emu.control.flaky(FCM_TOKEN, 1, retry_after=2)
    answer = await _push(client, emu)
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "1")
    answer = await _send(client, emu, MESSAGE, await _access_token(client, emu))
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "2")
    await emu.control.flaky(DEVICE, 1)  # without retry_after: no header, as before
    assert "retry-after" not in (await _push(client, emu)).headers


async def test_rate_limited_token_answers_429_with_retry_after(client, emu) -> None:
    await emu.control.rate_limited(DEVICE, 1, retry_after=30)
    await emu.control.rate_limited(FCM_TOKEN, 1, retry_after=7)
    answer = await _push(client, emu)
    assert (answer.status_code, answer.json()["reason"]) == (429, "TooManyRequests")
    assert answer.headers["retry-after"] == "30"
    assert (await _push(client, emu)).status_code == 200
    answer = await _send(client, emu, MESSAGE, await _access_token(client, emu))
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    assert answer.json()["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"


async def test_slow_token_delays_its_answer(client, emu) -> None:
    await emu.control.slow(DEVICE, 300)
    started = time.monotonic()
    answer = await _push(client, emu)
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_wildcard_fault_applies_to_every_token(client, emu) -> None:
    await emu.control.flaky("*", 1)
    assert (await _push(client, emu, token="cd" * 32)).status_code == 503
    assert (await _push(client, emu, token="cd" * 32)).status_code == 200


async def test_expired_access_tokens_get_401_and_a_new_token_works(client, emu) -> None:
    access = await _access_token(client, emu)
    await emu.control.expire_access_tokens()
    assert (await _send(client, emu, MESSAGE, access)).status_code == 401
    assert (await _send(client, emu, MESSAGE, await _access_token(client, emu))).status_code == 200


async def test_auth_switches_reject_the_next_requests(client, emu) -> None:
    await emu.control.set_auth(reject_apns=1, reject_fcm=1, reject_token=1, token_lifetime=120)
    answer = await _push(client, emu)
    assert (answer.status_code, answer.json()["reason"]) == (403, "ExpiredProviderToken")
    assert (await _push(client, emu)).status_code == 200
    assert (await _token_request(client, _assertion(_account(emu)))).status_code == 400
    granted = await _token_request(client, _assertion(_account(emu)))
    assert granted.json()["expires_in"] == 120
    access = granted.json()["access_token"]
    assert (await _send(client, emu, MESSAGE, access)).status_code == 401
    assert (await _send(client, emu, MESSAGE, access)).status_code == 200


async def test_control_api_rejects_garbage(client, emu) -> None:
    answer = await client.post("/_emulator/faults", json={"token": DEVICE, "kind": "cursed"})
    assert answer.status_code == 400
    answer = await client.post("/_emulator/faults", content=b"{nope")
    assert answer.status_code == 400


# counting ------------------------------------------------------------------------------


async def test_counting_per_notification_id_counts_duplicates(client, emu) -> None:
    apns_id = str(uuid.uuid4())
    for _ in range(2):
        assert (await _push(client, emu, **{"apns-id": apns_id})).status_code == 200
    access = await _access_token(client, emu)
    assert (await _send(client, emu, MESSAGE, access)).status_code == 200
    await emu.control.flaky(DEVICE, 1)
    assert (await _push(client, emu)).status_code == 503

    summary = await emu.control.summary()
    assert (summary["accepted"], summary["unique"], summary["duplicates"]) == (3, 2, 1)
    assert await emu.control.pushed() == 2
    assert summary["rejected"] == 1
    assert summary["token_requests"] == 1
    assert summary["by_platform"]["apns"]["accepted"] == 2
    delivery = await emu.control.delivery(apns_id)
    assert delivery is not None
    assert delivery["count"] == 2 and delivery["platform"] == "apns"
    assert delivery["first_received_at"] <= delivery["last_received_at"] <= time.time()
    exported = await emu.control.deliveries()
    assert exported[apns_id][0] == 2 and exported["n-1"][0] == 1
    # past the first id received (apns_id): what came since, for a run that read `unique`
    assert await emu.control.deliveries(skip=1) == {"n-1": exported["n-1"]}
    assert await emu.control.deliveries(skip=2) == {}
    assert await emu.control.delivery(str(uuid.uuid4())) is None
    recent = await emu.control.recent(10)
    assert "authorization" not in json.dumps(recent)

    await emu.control.reset()
    assert (await emu.control.summary())["accepted"] == 0


async def test_validate_only_is_not_counted(client, emu) -> None:
    access = await _access_token(client, emu)
    project = _account(emu)["project_id"]
    answer = await client.post(
        f"/v1/projects/{project}/messages:send",
        json={"message": MESSAGE, "validate_only": True},
        headers={"authorization": f"Bearer {access}"},
    )
    assert answer.status_code == 200
    assert (await emu.control.summary())["accepted"] == 0


# keys ----------------------------------------------------------------------------------


def test_keys_command_writes_throwaway_credentials(tmp_path, capsys) -> None:
    endpoint = "https://127.0.0.1:9999"
    assert emulator_main(["keys", "--dir", str(tmp_path), "--endpoint", endpoint]) == 0
    p8 = serialization.load_pem_private_key((tmp_path / "apns-key.p8").read_bytes(), None)
    assert isinstance(p8, ec.EllipticCurvePrivateKey) and p8.curve.name == "secp256r1"
    assert (tmp_path / "apns-key.p8").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    account = json.loads((tmp_path / "fcm-service-account.json").read_text())
    assert account["type"] == "service_account"
    assert account["token_uri"] == f"{endpoint}/token"
    assert {"project_id", "private_key_id", "private_key", "client_email"} <= account.keys()
    env = dict(line.split("=", 1) for line in (tmp_path / "notifier.env").read_text().splitlines())
    assert env["NOTIFIER_APNS_ENDPOINT"] == endpoint
    assert env["NOTIFIER_PROVIDER_CA_FILE"] == str(tmp_path / "ca.pem")
    assert len(env["NOTIFIER_APNS_KEY_ID"]) == len(env["NOTIFIER_APNS_TEAM_ID"]) == 10
    # a second run keeps the keys, and follows a new endpoint
    emulator_main(["keys", "--dir", str(tmp_path), "--endpoint", "https://127.0.0.1:7777"])
    again = json.loads((tmp_path / "fcm-service-account.json").read_text())
    assert again["private_key"] == account["private_key"]
    assert again["token_uri"] == "https://127.0.0.1:7777/token"


async def test_error_fault_answers_the_given_status_and_reason(client, emu) -> None:
    await emu.control.error(DEVICE, 500, "InternalServerError", count=1)
    await emu.control.error(FCM_TOKEN, 403, "SENDER_ID_MISMATCH", count=1)
    answer = await _push(client, emu)
    assert (answer.status_code, answer.json()["reason"]) == (500, "InternalServerError")
    assert (await _push(client, emu)).status_code == 200
    access = await _access_token(client, emu)
    answer = await _send(client, emu, MESSAGE, access)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert error["details"] == [{"@type": FCM_ERROR, "errorCode": "SENDER_ID_MISMATCH"}]
    assert (await _send(client, emu, MESSAGE, access)).status_code == 200
