"""The real APNs client against the emulator over real sockets (TLS + HTTP/2, ES256 JWT).

Faults are set per device token (each test uses fresh tokens); auth switches are global
to the emulator, so tests that set them put them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from notifier.metrics import WORKER_REGISTRY
from notifier.models import Platform, Priority
from notifier.providers.apns import ApnsProvider, ProviderToken
from notifier.providers.base import PushOutcome
from notifier.providers.factory import build_providers
from notifier.providers.http2 import TransportConfig
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

apns_notification = partial(fresh, Platform.APNS)
mints = partial(auth_refreshes, "apns")


def provider_with_clock(settings: Settings, clock: FakeClock, **options: Any) -> ApnsProvider:
    assert settings.apns_key_file and settings.apns_key_id and settings.apns_team_id
    token = ProviderToken(
        settings.apns_key_file.read_bytes(),
        key_id=settings.apns_key_id,
        team_id=settings.apns_team_id,
        clock=clock,
    )
    return ApnsProvider(
        token,
        topic=options.get("topic", settings.apns_topic or ""),
        endpoint=settings.apns_endpoint,
        transport=TransportConfig(timeout_seconds=10, ca_file=settings.provider_ca_file),
    )


async def test_send_delivers_once_with_the_mapped_headers(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification(ttl_seconds=600, priority=Priority.NORMAL)
    result = await apns.send(n)
    assert (result.outcome, result.provider_status, result.message_id) == (
        PushOutcome.SENT,
        200,
        n.id,
    )
    assert (await emulator.control.delivery(n.id))["count"] == 1
    seen = next(r for r in await emulator.control.recent(50) if r.get("token") == n.target.token)
    assert seen["headers"] == {
        "apns-id": n.id,
        "apns-topic": emulator.env["NOTIFIER_APNS_TOPIC"],
        "apns-push-type": "alert",
        "apns-priority": "5",
        "apns-expiration": str(int(n.created_at.timestamp()) + 600),
        "apns-collapse-id": n.id,
    }
    assert seen["payload"] == {"aps": {"alert": {"title": "Hi", "body": "text"}}, "k": "v"}


async def test_data_only_is_accepted_as_a_background_push(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification(title=None, body=None)
    assert (await apns.send(n)).sent
    seen = next(r for r in await emulator.control.recent(50) if r.get("token") == n.target.token)
    assert seen["headers"]["apns-push-type"] == "background"
    assert seen["payload"]["aps"] == {"content-available": 1}


async def test_unregistered_token_is_dead_since_its_timestamp(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification()
    await emulator.control.dead(n.target.token, since_ms=1_767_225_600_000)
    result = await apns.send(n)
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.TOKEN_DEAD,
        "Unregistered",
        410,
    )
    assert result.token_invalid_since == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fault", "outcome", "code", "status"),
    [
        ("bad", PushOutcome.TOKEN_DEAD, "BadDeviceToken", 400),
        ("flaky", PushOutcome.RETRY, "ServiceUnavailable", 503),
    ],
)
async def test_token_faults_map_to_outcomes(
    emulator: Any, apns: ApnsProvider, fault: str, outcome: PushOutcome, code: str, status: int
) -> None:
    n = apns_notification()
    await emulator.control.set_fault(n.target.token, fault)
    labels = {"provider": "apns", "status_class": f"{status // 100}xx", "code": code}

    def counted() -> float:
        value = WORKER_REGISTRY.get_sample_value("notifier_provider_responses_total", labels)
        return value or 0.0

    before = counted()
    result = await apns.send(n)
    assert (result.outcome, result.code, result.provider_status) == (outcome, code, status)
    assert await emulator.control.delivery(n.id) is None
    assert counted() == before + 1


async def test_too_many_requests_is_a_retry_honouring_retry_after(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification()
    await emulator.control.rate_limited(n.target.token, 1, retry_after=9)
    result = await apns.send(n)
    assert (result.outcome, result.code, result.retry_after_seconds) == (
        PushOutcome.RETRY,
        "TooManyRequests",
        9.0,
    )
    assert (await apns.send(n)).sent


async def test_wrong_topic_is_permanent(provider_settings: Callable[..., Settings]) -> None:
    settings = provider_settings(apns_topic="com.example.other")
    result = await send_with(settings, apns_notification())
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.PERMANENT,
        "BadTopic",
        400,
    )


async def test_oversized_payload_is_permanent_without_a_request(
    emulator: Any, apns: ApnsProvider
) -> None:
    before = await emulator.control.summary()
    result = await apns.send(apns_notification(body="x" * 5000))
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.PERMANENT,
        "PayloadTooLarge",
        None,
    )
    after = await emulator.control.summary()
    assert (after["accepted"], after["rejected"]) == (before["accepted"], before["rejected"])


async def test_slow_answer_is_a_timeout_retry(
    emulator: Any, provider_settings: Callable[..., Settings]
) -> None:
    n = apns_notification()
    await emulator.control.slow(n.target.token, 2000)
    try:
        result = await send_with(provider_settings(provider_timeout_seconds=0.3), n)
    finally:
        await emulator.control.clear_faults(n.target.token)
    assert (result.outcome, result.code) == (PushOutcome.RETRY, "timeout")


async def test_provider_jwt_is_reused_across_sends(
    provider_settings: Callable[..., Settings],
) -> None:
    provider = build_providers(provider_settings())[Platform.APNS]
    before = mints()
    try:
        results = await asyncio.gather(*(provider.send(apns_notification()) for _ in range(50)))
    finally:
        await provider.close()
    assert all(r.sent for r in results)
    assert mints() == before + 1


async def test_provider_jwt_rotates_after_forty_minutes_not_after_ten(
    provider_settings: Callable[..., Settings],
) -> None:
    clock = FakeClock(offset=-45 * 60)  # first JWT: iat 45 minutes ago, still valid for APNs
    provider = provider_with_clock(provider_settings(), clock)
    try:
        assert (await provider.send(apns_notification())).sent
        before = mints()
        clock.offset = -35 * 60  # 10 minutes later: too soon to rotate
        assert (await provider.send(apns_notification())).sent
        assert mints() == before
        clock.offset = 0  # 45 minutes after the mint: rotate
        assert (await provider.send(apns_notification())).sent
        assert mints() == before + 1
    finally:
        await provider.close()


async def test_expired_provider_token_is_reminted_once_and_the_push_retried(
    emulator: Any, apns: ApnsProvider
) -> None:
    assert (await apns.send(apns_notification())).sent
    before = mints()
    await emulator.control.set_auth(reject_apns=1)
    n = apns_notification()
    result = await apns.send(n)
    assert result.sent
    assert mints() == before + 1
    assert (await emulator.control.delivery(n.id))["count"] == 1


async def test_provider_token_rejected_twice_is_a_config_retry(
    emulator: Any, apns: ApnsProvider
) -> None:
    assert (await apns.send(apns_notification())).sent
    before = mints()
    async with auth_switched(emulator, reject_apns=2):
        result = await apns.send(apns_notification())
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "config_error",
        403,
    )
    assert mints() == before + 1


async def test_thousand_concurrent_pushes_share_few_connections_and_one_jwt(
    emulator: Any, provider_settings: Callable[..., Settings]
) -> None:
    before = mints()
    await send_burst(emulator, provider_settings(), Platform.APNS, 1000)
    assert mints() == before + 1


async def test_without_our_ca_the_emulator_is_refused_as_a_tls_retry(
    emulator: Any,
) -> None:
    env = {k: v for k, v in emulator.env.items() if k != "NOTIFIER_PROVIDER_CA_FILE"}
    n = apns_notification()
    result = await send_with(load_settings(env), n)
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "tls",
        None,
    )
    assert result.message and n.target.token not in result.message


def test_a_bad_key_file_fails_at_start_without_echoing_it(tmp_path: Path) -> None:
    key = tmp_path / "key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not an EC P-256") as error:
        ProviderToken(key.read_bytes(), key_id="K", team_id="T")
    assert "SECRET" not in str(error.value)


def test_rotation_outside_twenty_to_sixty_minutes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 20 and 60"):
        ProviderToken(b"", key_id="K", team_id="T", rotate_seconds=10 * 60)


async def test_errors_never_reveal_the_key_the_jwt_or_the_device_token(
    emulator: Any, provider_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provider_settings()
    assert settings.apns_key_file is not None
    secrets_seen = key_fragments(settings.apns_key_file.read_text())
    texts: list[str] = []
    n = apns_notification()
    secrets_seen.append(n.target.token)
    with capture_logs() as logs:
        for overrides in ({"apns_endpoint": closed_port_url()}, {}):
            provider = build_providers(provider_settings(**overrides))[Platform.APNS]
            assert isinstance(provider, ApnsProvider)
            secrets_seen.append(provider._jwt.current())
            if not overrides:
                await emulator.control.set_auth(reject_apns=2)  # 403 twice
            try:
                result = await provider.send(n)
                secrets_seen.append(provider._jwt.current())
            finally:
                await emulator.control.set_auth(reject_apns=0)
                await provider.close()
            assert result.outcome is PushOutcome.RETRY
            texts += [repr(result), str(result.message)]
    captured = capsys.readouterr()
    written = "\n".join([*texts, repr(logs), captured.out, captured.err])
    assert {"apns_provider_token_rejected", "apns_config_error"} <= {e["event"] for e in logs}
    assert not [s for s in secrets_seen if s in written]
