"""Several FCM projects and APNs teams in one emulator: binding, faults per credential, counts.

Over real sockets (TLS, HTTP/2), with the product's own provider clients where they fit
(``FcmProvider``, ``ApnsProvider``), google-auth for the OAuth2 flow, and httpx for the
cases a correct client never produces (a token sent to another project's URL).
Credentials added here stay registered for the session; each test uses its own ids.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from emulator.testing import EmulatorHandle, run_emulator
from notifier.models import Platform, Target
from notifier.providers.apns import ApnsProvider, ProviderToken
from notifier.providers.base import PushOutcome, PushResult
from notifier.providers.fcm import FcmProvider
from notifier.providers.http2 import TransportConfig
from notifier.providers.oauth import ServiceAccount
from tests.providers.support import make

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
ALERT = b'{"aps":{"alert":{"title":"Hi","body":"there"}}}'
MESSAGE = {"token": "fcm-device-token-0001", "notification": {"title": "Hi"}}


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
async def emu(emulator: EmulatorHandle) -> AsyncIterator[EmulatorHandle]:
    await emulator.control.reset()
    yield emulator
    await emulator.control.reset()


def _client(emu: EmulatorHandle) -> httpx.AsyncClient:
    """One HTTP/2 connection (httpx multiplexes sequential requests on it)."""
    context = ssl.create_default_context(cafile=str(emu.ca_file))
    return httpx.AsyncClient(base_url=emu.endpoint, http2=True, verify=context, trust_env=False)


@pytest.fixture
async def client(emu: EmulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(emu) as c:
        yield c


def _transport(emu: EmulatorHandle) -> TransportConfig:
    return TransportConfig(timeout_seconds=10, ca_file=emu.ca_file)


def _fcm(emu: EmulatorHandle, info: dict[str, Any]) -> FcmProvider:
    account = ServiceAccount.from_info(info)
    return FcmProvider(account, endpoint=emu.endpoint, transport=_transport(emu))


def _apns(emu: EmulatorHandle, key: dict[str, Any], topic: str | None = None) -> ApnsProvider:
    token = ProviderToken(key["key_pem"].encode(), key_id=key["key_id"], team_id=key["team_id"])
    return ApnsProvider(
        token, topic=topic or key["topics"][0], endpoint=emu.endpoint, transport=_transport(emu)
    )


async def _send_once(
    provider: FcmProvider | ApnsProvider, platform: Platform
) -> tuple[str, PushResult]:
    token = secrets.token_hex(32) if platform is Platform.APNS else f"fcm-{secrets.token_hex(8)}"
    notification = make(platform, target=Target(platform, token))
    return notification.id, await provider.send(notification)


async def _token(client: httpx.AsyncClient, info: dict[str, Any]) -> httpx.Response:
    now = int(time.time())
    claims = {"iss": info["client_email"], "aud": info["token_uri"], "scope": SCOPE}
    assertion = jwt.encode(
        {**claims, "iat": now, "exp": now + 3600},
        info["private_key"],
        algorithm="RS256",
        headers={"kid": info["private_key_id"]},
    )
    return await client.post("/token", data={"grant_type": GRANT, "assertion": assertion})


async def _access(client: httpx.AsyncClient, info: dict[str, Any]) -> str:
    answer = await _token(client, info)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def _send(
    client: httpx.AsyncClient, project: str, access: str, message: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        f"/v1/projects/{project}/messages:send",
        json={"message": message or MESSAGE},
        headers={"authorization": f"Bearer {access}"},
    )


def _provider_jwt(key_pem: str, kid: str, team: str) -> str:
    return jwt.encode(
        {"iss": team, "iat": int(time.time())}, key_pem, algorithm="ES256", headers={"kid": kid}
    )


async def _push(
    client: httpx.AsyncClient, bearer: str, topic: str, device: str = "ab" * 32
) -> httpx.Response:
    headers = {
        "authorization": f"bearer {bearer}",
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-id": str(uuid.uuid4()),
    }
    return await client.post(f"/3/device/{device}", content=ALERT, headers=headers)


# several projects and teams ---------------------------------------------------------------


async def test_three_fcm_projects_each_push_arrives_under_its_own_project(emu) -> None:
    projects = [_unique(f"app{n}") for n in range(3)]
    providers = [_fcm(emu, await emu.control.add_fcm_project(p)) for p in projects]
    try:
        sent = {}
        for project, provider in zip(projects, providers, strict=True):
            for _ in range(project.count("app1") + 1):  # app1 sends twice: counts differ
                nid, result = await _send_once(provider, Platform.FCM)
                assert result.sent, result
                assert result.message_id and result.message_id.startswith(f"projects/{project}/")
                sent[nid] = project
    finally:
        for provider in providers:
            await provider.close()
    by_fcm = (await emu.control.summary())["by_credential"]["fcm"]
    assert [by_fcm[p]["accepted"] for p in projects] == [1, 2, 1]
    assert [by_fcm[p]["token_requests"] for p in projects] == [1, 1, 1]
    for nid, project in sent.items():
        delivery = await emu.control.delivery(nid)
        assert delivery is not None and delivery["credential"] == project


async def test_a_token_for_one_project_is_permission_denied_on_another(client, emu) -> None:
    mine, theirs = _unique("mine"), _unique("theirs")
    info = await emu.control.add_fcm_project(mine)
    await emu.control.add_fcm_project(theirs)
    access = await _access(client, info)
    answer = await _send(client, theirs, access)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert (error["status"], "details" in error) == ("PERMISSION_DENIED", False)
    assert f"projects/{theirs}" in error["message"]
    assert (await _send(client, mine, access)).status_code == 200
    by_fcm = (await emu.control.summary())["by_credential"]["fcm"]
    assert by_fcm[mine] == {"accepted": 1, "rejected": 1, "token_requests": 1}
    assert by_fcm[theirs]["accepted"] == by_fcm[theirs]["rejected"] == 0


async def test_three_apns_teams_each_push_arrives_under_its_own_key(emu) -> None:
    keys = [
        await emu.control.add_apns_key(topics=[f"com.example.{_unique('app')}"]) for _ in range(3)
    ]
    assert len({k["team_id"] for k in keys}) == len({k["key_id"] for k in keys}) == 3
    sent = {}
    for key in keys:
        provider = _apns(emu, key)
        try:
            nid, result = await _send_once(provider, Platform.APNS)
        finally:
            await provider.close()
        assert result.sent, result
        sent[nid] = f"{key['team_id']}/{key['key_id']}"
    by_apns = (await emu.control.summary())["by_credential"]["apns"]
    for nid, name in sent.items():
        assert by_apns[name] == {"accepted": 1, "rejected": 0}
        delivery = await emu.control.delivery(nid)
        assert delivery is not None and delivery["credential"] == name


async def test_apns_jwt_must_name_a_registered_key_of_its_team(client, emu) -> None:
    a = await emu.control.add_apns_key()
    b = await emu.control.add_apns_key()
    topic = a["topics"][0]
    cases = {
        "right": _provider_jwt(a["key_pem"], a["key_id"], a["team_id"]),
        "another team": _provider_jwt(a["key_pem"], a["key_id"], b["team_id"]),
        "another key's kid": _provider_jwt(a["key_pem"], b["key_id"], b["team_id"]),
        "unknown kid": _provider_jwt(a["key_pem"], "NOSUCHKEY1", a["team_id"]),
    }
    answers = {name: await _push(client, bearer, topic) for name, bearer in cases.items()}
    assert answers.pop("right").status_code == 200
    for name, answer in answers.items():
        assert (answer.status_code, answer.json()["reason"]) == (403, "InvalidProviderToken"), name


async def test_apns_topic_of_another_team_is_topic_disallowed(client, emu) -> None:
    a = await emu.control.add_apns_key(topics=["com.example.a1", "com.example.a2"])
    b = await emu.control.add_apns_key(topics=["com.example.b"])
    bearer = _provider_jwt(a["key_pem"], a["key_id"], a["team_id"])
    assert (await _push(client, bearer, "com.example.a2")).status_code == 200
    answer = await _push(client, bearer, b["topics"][0])
    assert (answer.status_code, answer.json()["reason"]) == (400, "TopicDisallowed")
    answer = await _push(client, bearer, "com.example.nobody")
    assert (answer.status_code, answer.json()["reason"]) == (400, "BadTopic")


# faults per credential -------------------------------------------------------------------


async def test_revoked_service_account_is_refused_and_a_replacement_heals(client, emu) -> None:
    import google.auth.exceptions
    import google.auth.transport.requests
    import requests
    from google.oauth2 import service_account

    victim, bystander = _unique("victim"), _unique("bystander")
    old = await emu.control.add_fcm_project(victim)
    other = await emu.control.add_fcm_project(bystander)
    old_access, other_access = await _access(client, old), await _access(client, other)
    assert await emu.control.revoke_fcm(victim) == 1

    refused = await _token(client, old)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        old, scopes=[SCOPE]
    )
    session = requests.Session()
    session.trust_env, session.verify = False, str(emu.ca_file)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        creds.refresh(google.auth.transport.requests.Request(session))
    answer = await _send(client, victim, old_access)
    assert (answer.status_code, answer.json()["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert (await _send(client, bystander, other_access)).status_code == 200

    replacement = await emu.control.add_fcm_project(victim)
    assert replacement["private_key_id"] != old["private_key_id"]
    provider = _fcm(emu, replacement)
    try:
        _, result = await _send_once(provider, Platform.FCM)
    finally:
        await provider.close()
    assert result.sent, result
    assert (await _token(client, old)).status_code == 400  # the old key stays revoked


async def test_token_endpoint_refusal_for_one_project_only(client, emu) -> None:
    a, b = _unique("refused"), _unique("fine")
    info_a, info_b = await emu.control.add_fcm_project(a), await emu.control.add_fcm_project(b)
    minted_before = await _access(client, info_a)
    await emu.control.refuse_fcm_tokens(a)
    answer = await _token(client, info_a)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    assert (await _token(client, info_b)).status_code == 200
    assert (await _send(client, a, minted_before)).status_code == 200  # minted ones work

    await emu.control.refuse_fcm_tokens(a, error="temporarily_unavailable", status=503)
    provider = _fcm(emu, info_a)
    try:
        _, result = await _send_once(provider, Platform.FCM)
        assert result.outcome is PushOutcome.RETRY and not result.sent, result
        await emu.control.heal_fcm(a)
        _, result = await _send_once(provider, Platform.FCM)
        assert result.sent, result
    finally:
        await provider.close()


async def test_429_for_every_push_of_one_project_only(emu) -> None:
    a, b = _unique("throttled"), _unique("calm")
    providers = {p: _fcm(emu, await emu.control.add_fcm_project(p)) for p in (a, b)}
    try:
        await emu.control.throttle_fcm(a, retry_after=30)
        for _ in range(3):
            _, result = await _send_once(providers[a], Platform.FCM)
            assert (result.outcome, result.provider_status) == (PushOutcome.RETRY, 429)
            assert (result.code, result.retry_after_seconds) == ("QUOTA_EXCEEDED", 30)
            _, other = await _send_once(providers[b], Platform.FCM)
            assert other.sent, other
        await emu.control.heal_fcm(a)
        _, result = await _send_once(providers[a], Platform.FCM)
        assert result.sent, result
    finally:
        for provider in providers.values():
            await provider.close()
    by_fcm = (await emu.control.summary())["by_credential"]["fcm"]
    assert (by_fcm[a]["accepted"], by_fcm[a]["rejected"]) == (1, 3)
    assert (by_fcm[b]["accepted"], by_fcm[b]["rejected"]) == (3, 0)


async def test_error_fault_for_one_project_with_a_count(client, emu) -> None:
    a = _unique("autherr")
    access = await _access(client, await emu.control.add_fcm_project(a))
    await emu.control.fail_fcm(a, 401, "THIRD_PARTY_AUTH_ERROR", count=2)
    for _ in range(2):
        answer = await _send(client, a, access)
        assert answer.status_code == 401
        assert answer.json()["error"]["details"][0]["errorCode"] == "THIRD_PARTY_AUTH_ERROR"
    assert (await _send(client, a, access)).status_code == 200


async def test_revoked_apns_key_is_invalid_provider_token_and_a_new_key_heals(emu) -> None:
    victim = await emu.control.add_apns_key(topics=["com.example.victim"])
    bystander = await emu.control.add_apns_key(topics=["com.example.bystander"])
    await emu.control.revoke_apns(victim["key_id"])
    results = {}
    for name, key in (("victim", victim), ("bystander", bystander)):
        provider = _apns(emu, key)
        try:
            _, results[name] = await _send_once(provider, Platform.APNS)
        finally:
            await provider.close()
    refused = results["victim"]
    assert refused.provider_status == 403 and not refused.sent, refused
    assert "InvalidProviderToken" in (refused.message or ""), refused
    assert results["bystander"].sent, results["bystander"]
    replacement = await emu.control.add_apns_key(
        team_id=victim["team_id"], topics=["com.example.victim"]
    )
    provider = _apns(emu, replacement)
    try:
        nid, result = await _send_once(provider, Platform.APNS)
    finally:
        await provider.close()
    assert result.sent, result
    delivery = await emu.control.delivery(nid)
    assert delivery is not None
    assert delivery["credential"] == f"{victim['team_id']}/{replacement['key_id']}"


async def test_apns_key_throttled_then_healed(emu) -> None:
    key = await emu.control.add_apns_key()
    other = await emu.control.add_apns_key()
    await emu.control.throttle_apns(key["key_id"], retry_after=7)
    topic = key["topics"][0]
    bearer = _provider_jwt(key["key_pem"], key["key_id"], key["team_id"])
    async with _client(emu) as client:  # a connection per key, as APNs requires
        answer = await _push(client, bearer, topic)
        assert (answer.status_code, answer.json()["reason"]) == (429, "TooManyRequests")
        assert answer.headers["retry-after"] == "7"
        await emu.control.fail_apns(key["key_id"], 403, "Forbidden", count=1)
        answer = await _push(client, bearer, topic)
        assert (answer.status_code, answer.json()["reason"]) == (403, "Forbidden")
        assert (await _push(client, bearer, topic)).status_code == 200  # the count ran out
    async with _client(emu) as client:
        other_bearer = _provider_jwt(other["key_pem"], other["key_id"], other["team_id"])
        assert (await _push(client, other_bearer, topic)).status_code == 200


async def test_a_connection_is_bound_to_the_key_of_its_first_push(emu) -> None:
    a = await emu.control.add_apns_key()
    b = await emu.control.add_apns_key()
    topic = a["topics"][0]
    bearer_a = _provider_jwt(a["key_pem"], a["key_id"], a["team_id"])
    bearer_b = _provider_jwt(b["key_pem"], b["key_id"], b["team_id"])
    async with _client(emu) as client:
        assert (await _push(client, bearer_a, topic)).status_code == 200
        answer = await _push(client, bearer_b, topic)
        assert (answer.status_code, answer.json()["reason"]) == (403, "UnrelatedKeyIdInToken")
        assert (await _push(client, bearer_a, topic)).status_code == 200
    async with _client(emu) as client:  # a new connection for key b
        assert (await _push(client, bearer_b, topic)).status_code == 200


async def test_reset_clears_credential_faults_and_counts_but_keeps_credentials(client, emu) -> None:
    project = _unique("kept")
    info = await emu.control.add_fcm_project(project)
    key = await emu.control.add_apns_key()
    await emu.control.revoke_fcm(project)
    await emu.control.revoke_apns(key["key_id"])
    await emu.control.reset()
    access = await _access(client, info)
    assert (await _send(client, project, access)).status_code == 200
    bearer = _provider_jwt(key["key_pem"], key["key_id"], key["team_id"])
    assert (await _push(client, bearer, key["topics"][0])).status_code == 200
    listed = await emu.control.credentials()
    assert project in {a["project_id"] for a in listed["fcm"]}
    assert key["key_id"] in {k["key_id"] for k in listed["apns"]}
    assert "PRIVATE KEY" not in str(listed) and "key_pem" not in str(listed)


async def test_default_credentials_are_counted_too(client, emu) -> None:
    info = json.loads(Path(emu.env["NOTIFIER_FCM_CREDENTIALS"]).read_text())
    access = await _access(client, info)
    assert (await _send(client, info["project_id"], access)).status_code == 200
    team, key_id = emu.env["NOTIFIER_APNS_TEAM_ID"], emu.env["NOTIFIER_APNS_KEY_ID"]
    pem = Path(emu.env["NOTIFIER_APNS_KEY_FILE"]).read_text()
    bearer = _provider_jwt(pem, key_id, team)
    assert (await _push(client, bearer, emu.env["NOTIFIER_APNS_TOPIC"])).status_code == 200
    by_credential = (await emu.control.summary())["by_credential"]
    assert by_credential["apns"][f"{team}/{key_id}"]["accepted"] == 1
    assert by_credential["fcm"][info["project_id"]]["accepted"] == 1


@pytest.mark.parametrize(
    ("method", "route", "body", "status"),
    [
        ("POST", "fcm/projects", {"project_id": "Not Valid"}, 400),
        ("POST", "fcm/projects", {}, 400),
        ("POST", "fcm/projects/no-such-project/faults", {"kind": "revoked"}, 404),
        ("DELETE", "apns/keys/NOSUCHKEY/faults", None, 404),
        ("POST", "apns/keys", {"key_id": "bad id!"}, 400),
        ("POST", "apns/keys", {"topics": []}, 400),
        ("GET", "fcm/projects", None, 405),
        ("POST", "credentials", {}, 405),
        ("PUT", "apns/keys/NOSUCHKEY/faults", {}, 405),
    ],
)
async def test_credential_routes_reject_garbage(client, emu, method, route, body, status) -> None:
    answer = await client.request(method, f"/_emulator/{route}", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]


async def test_credential_faults_reject_garbage(client, emu) -> None:
    project = _unique("garbage")
    await emu.control.add_fcm_project(project)
    key = await emu.control.add_apns_key()
    route = f"/_emulator/fcm/projects/{project}/faults"
    for body in (
        {"kind": "cursed"},
        {"kind": "rate_limited", "count": 0},
        {"kind": "error", "status": 200},
        {"kind": "token_refused", "error": "made_up"},
    ):
        assert (await client.post(route, json=body)).status_code == 400, body
    assert (await client.post(route, content=b"{nope")).status_code == 400
    answer = await client.post("/_emulator/apns/keys", json={"key_id": key["key_id"]})
    assert answer.status_code == 409
    access = await _access(client, (await emu.control.add_fcm_project(project)))
    assert (await _send(client, project, access)).status_code == 200  # nothing changed


async def test_handle_writes_credential_files_the_product_loads(emu, tmp_path) -> None:
    project = _unique("files")
    account_file = await emu.fcm_project_file(project, tmp_path)
    key_file, key = await emu.apns_key_file(tmp_path, topics=["com.example.files"])
    assert account_file.stat().st_mode & 0o077 == key_file.stat().st_mode & 0o077 == 0
    fcm = FcmProvider.from_files(account_file, endpoint=emu.endpoint, transport=_transport(emu))
    apns = ApnsProvider.from_files(
        key_file,
        key_id=key["key_id"],
        team_id=key["team_id"],
        topic="com.example.files",
        endpoint=emu.endpoint,
        transport=_transport(emu),
    )
    try:
        for provider, platform in ((fcm, Platform.FCM), (apns, Platform.APNS)):
            _, result = await _send_once(provider, platform)
            assert result.sent, result
    finally:
        await fcm.close()
        await apns.close()


async def test_added_credentials_survive_a_restart(tmp_path) -> None:
    async with run_emulator(tmp_path) as first:
        info = await first.control.add_fcm_project("survivor")
        key = await first.control.add_apns_key(topics=["com.example.survivor"])
    async with run_emulator(tmp_path) as second:
        info["token_uri"] = f"{second.endpoint}/token"  # a new free port; same keys
        providers = ((_fcm(second, info), Platform.FCM), (_apns(second, key), Platform.APNS))
        try:
            for provider, platform in providers:
                _, result = await _send_once(provider, platform)
                assert result.sent, result
        finally:
            for provider, _ in providers:
                await provider.close()
        listed = await second.control.credentials()
        assert [a["project_id"] for a in listed["fcm"]][-1] == "survivor"


def test_a_corrupt_credentials_file_stops_the_start_with_one_line(tmp_path, capsys) -> None:
    from emulator import main as emulator_main
    from emulator.testing import free_port

    (tmp_path / "credentials.jsonl").write_text('{"provider": "fcm"}\n')
    port = free_port("127.0.0.1")
    assert emulator_main(["--keys", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("credentials.jsonl: line 1 is not a credential"), err
    assert len(err.splitlines()) == 1
