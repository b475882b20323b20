"""The real FCM client against the emulator over real sockets (TLS, OAuth2 JWT-bearer grant).

Faults are set per device token (each test uses fresh tokens); auth switches are global
to the emulator, so tests that set them put them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from notifier.models import Platform
from notifier.providers.base import PushOutcome
from notifier.providers.factory import build_providers
from notifier.providers.fcm import FcmProvider
from notifier.providers.http2 import TransportConfig
from notifier.providers.oauth import AccessTokenSource, CredentialsError, ServiceAccount
from notifier.settings import Settings, load_settings
from tests.providers.support import (
    FakeClock,
    auth_refreshes,
    auth_switched,
    closed_port_url,
    fresh,
    key_fragments,
    send_burst,
    send_with,
)

fcm_notification = partial(fresh, Platform.FCM)
refreshes = partial(auth_refreshes, "fcm")


async def token_requests(emulator: Any) -> int:
    return int((await emulator.control.summary())["token_requests"])


async def test_send_delivers_once_with_the_mapped_message(emulator: Any, fcm: FcmProvider) -> None:
    n = fcm_notification(ttl_seconds=60, collapse_key="c1")
    result = await fcm.send(n)
    assert result.outcome is PushOutcome.SENT and result.provider_status == 200
    assert result.message_id and result.message_id.startswith("projects/")
    assert (await emulator.control.delivery(n.id))["count"] == 1
    seen = [r["message"] for r in await emulator.control.recent(50) if r["platform"] == "fcm"]
    message = next(m for m in seen if m["data"].get("notification_id") == n.id)
    assert message["android"] == {
        "priority": "HIGH",
        "ttl": "60s",
        "collapse_key": "c1",
        "notification": {"tag": n.id},
    }


@pytest.mark.parametrize(
    ("fault", "outcome", "code", "status"),
    [
        ("dead", PushOutcome.TOKEN_DEAD, "UNREGISTERED", 404),
        ("bad", PushOutcome.TOKEN_DEAD, "INVALID_ARGUMENT", 400),
        ("flaky", PushOutcome.RETRY, "UNAVAILABLE", 503),
    ],
)
async def test_token_faults_map_to_outcomes(
    emulator: Any, fcm: FcmProvider, fault: str, outcome: PushOutcome, code: str, status: int
) -> None:
    n = fcm_notification()
    await emulator.control.set_fault(n.target.token, fault)
    result = await fcm.send(n)
    assert (result.outcome, result.code, result.provider_status) == (outcome, code, status)
    assert await emulator.control.delivery(n.id) is None


async def test_flaky_token_is_delivered_once_the_fault_passes(
    emulator: Any, fcm: FcmProvider
) -> None:
    n = fcm_notification()
    await emulator.control.flaky(n.target.token, 1)
    assert (await fcm.send(n)).outcome is PushOutcome.RETRY
    assert (await fcm.send(n)).sent


async def test_quota_exceeded_is_a_retry_honouring_retry_after(
    emulator: Any, fcm: FcmProvider
) -> None:
    n = fcm_notification()
    await emulator.control.rate_limited(n.target.token, 1, retry_after=7)
    result = await fcm.send(n)
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "QUOTA_EXCEEDED",
        429,
    )
    assert result.retry_after_seconds == 7.0


async def test_invalid_payload_is_permanent_and_not_a_dead_token(fcm: FcmProvider) -> None:
    result = await fcm.send(fcm_notification(data={"from": "reserved key"}))
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.PERMANENT,
        "INVALID_ARGUMENT",
        400,
    )


async def test_slow_answer_is_a_timeout_retry(
    emulator: Any, provider_settings: Callable[..., Settings]
) -> None:
    n = fcm_notification()
    await emulator.control.slow(n.target.token, 2000)
    try:
        result = await send_with(provider_settings(provider_timeout_seconds=0.3), n)
    finally:
        await emulator.control.clear_faults(n.target.token)
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "timeout",
        None,
    )


async def test_expired_access_token_is_refreshed_once_and_the_send_retried(
    emulator: Any, fcm: FcmProvider
) -> None:
    assert (await fcm.send(fcm_notification())).sent
    before, fetched = await token_requests(emulator), refreshes()
    await emulator.control.expire_access_tokens()
    results = await asyncio.gather(*(fcm.send(fcm_notification()) for _ in range(20)))
    assert all(r.sent for r in results)
    assert await token_requests(emulator) == before + 1
    assert refreshes() == fetched + 1


async def test_access_token_is_refreshed_shortly_before_it_expires(
    emulator: Any, provider_settings: Callable[..., Settings]
) -> None:
    settings = provider_settings()
    assert settings.fcm_credentials is not None
    clock = FakeClock()
    provider = FcmProvider(
        ServiceAccount.from_file(settings.fcm_credentials),
        endpoint=settings.fcm_endpoint,
        transport=TransportConfig(timeout_seconds=10, ca_file=settings.provider_ca_file),
        clock=clock,
    )
    try:
        before = await token_requests(emulator)
        assert (await provider.send(fcm_notification())).sent
        clock.offset = 3600 - 360  # six minutes before expiry: still cached
        assert (await provider.send(fcm_notification())).sent
        assert await token_requests(emulator) == before + 1
        clock.offset = 3600 - 240  # four minutes before expiry: refreshed ahead of time
        async with auth_switched(emulator, reject_token=1):  # the early refresh fails:
            assert (await provider.send(fcm_notification())).sent  # the valid token serves
        assert await token_requests(emulator) == before + 1
        assert (await provider.send(fcm_notification())).sent
        assert await token_requests(emulator) == before + 2
    finally:
        await provider.close()


async def test_second_401_after_a_refresh_is_a_config_error(
    emulator: Any, fcm: FcmProvider
) -> None:
    assert (await fcm.send(fcm_notification())).sent
    before = await token_requests(emulator)
    async with auth_switched(emulator, reject_fcm=2):
        result = await fcm.send(fcm_notification())
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "config_error",
        401,
    )
    assert await token_requests(emulator) == before + 1


async def test_token_endpoint_refusal_is_a_config_retry_then_recovers(
    emulator: Any, fcm: FcmProvider
) -> None:
    async with auth_switched(emulator, reject_token=1):
        refused = await fcm.send(fcm_notification())
    assert (refused.outcome, refused.code) == (PushOutcome.RETRY, "config_error")
    assert (await fcm.send(fcm_notification())).sent


async def test_wrong_project_is_a_config_retry(emulator: Any, tmp_path: Path) -> None:
    account = orjson.loads(Path(emulator.env["NOTIFIER_FCM_CREDENTIALS"]).read_bytes())
    account["project_id"] = "someone-elses-project"
    credentials = tmp_path / "sa.json"
    credentials.write_bytes(orjson.dumps(account))
    settings = load_settings(emulator.env, fcm_credentials=credentials)
    result = await send_with(settings, fcm_notification())
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "config_error",
        403,
    )


async def test_thousand_concurrent_sends_share_one_token_fetch_and_few_connections(
    emulator: Any, provider_settings: Callable[..., Settings]
) -> None:
    before, after = await send_burst(emulator, provider_settings(), Platform.FCM, 1000)
    assert after["token_requests"] == before["token_requests"] + 1


async def test_without_our_ca_the_emulator_is_refused_as_a_tls_retry(
    emulator: Any,
) -> None:
    env = {k: v for k, v in emulator.env.items() if k != "NOTIFIER_PROVIDER_CA_FILE"}
    result = await send_with(load_settings(env), fcm_notification())
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "tls",
        None,
    )
    assert result.message and "certificate" in result.message


async def test_process_wide_ca_variables_cannot_override_our_ca(
    provider_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "empty.pem"
    bogus.write_text("")
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(bogus))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert (await send_with(provider_settings(), fcm_notification())).sent


def other_rsa_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_errors_never_reveal_keys_tokens_or_device_tokens(
    emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    account = orjson.loads(Path(emulator.env["NOTIFIER_FCM_CREDENTIALS"]).read_bytes())
    forged = {**account, "private_key": other_rsa_key_pem()}
    unreachable = {**account, "token_uri": closed_port_url() + "/token"}
    files = {}
    for name, content in (("forged", forged), ("unreachable", unreachable)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_bytes(orjson.dumps(content))
    secrets_seen: list[str] = [*key_fragments(account["private_key"])]
    secrets_seen += key_fragments(forged["private_key"])
    texts: list[str] = []
    n = fcm_notification()
    secrets_seen.append(n.target.token)

    with capture_logs() as logs:
        for overrides in (
            {"fcm_credentials": files["forged"]},  # token endpoint: invalid_grant
            {"fcm_credentials": files["unreachable"]},  # token endpoint: connection refused
            {"fcm_endpoint": closed_port_url()},  # send: connection refused
            {},  # send: 401 twice (set below)
        ):
            provider = build_providers(load_settings(emulator.env, **overrides))[Platform.FCM]
            assert isinstance(provider, FcmProvider)
            if not overrides:
                secrets_seen.append(await provider._auth.token())
                await emulator.control.set_auth(reject_fcm=2)
            try:
                result = await provider.send(n)
            finally:
                await emulator.control.set_auth(reject_fcm=0)
                await provider.close()
            assert result.outcome is PushOutcome.RETRY
            texts += [repr(result), str(result.message)]
        with pytest.raises(CredentialsError) as error:  # a truncated key fails at start
            AccessTokenSource(
                ServiceAccount.from_info({**account, "private_key": account["private_key"][:300]}),
                transport=None,  # type: ignore[arg-type]
            )
        texts.append(str(error.value))

    captured = capsys.readouterr()
    written = "\n".join([*texts, repr(logs), captured.out, captured.err])
    assert {"fcm_token_rejected", "fcm_token_fetch_failed", "fcm_config_error"} <= {
        entry["event"] for entry in logs
    }
    leaked = [s for s in secrets_seen if s in written]
    assert not leaked
