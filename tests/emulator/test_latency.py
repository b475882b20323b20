"""The emulator's provider latency profile: per platform, on push answers only, concurrent.

Timings assert lower bounds (a push waits at least the fixed delay) and, for overlap, a
wall time far below the serialized sum, so a loaded machine cannot make them fail.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx
import pytest

from emulator import main as emulator_main
from emulator.latency import DelayRange, LatencyProfile
from emulator.testing import run_emulator
from tests.emulator.test_emulator import (
    DEVICE,
    GRANT,
    MESSAGE,
    _access_token,
    _account,
    _assertion,
    _push,
    _send,
)


async def _timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await call  # type: ignore[misc]
    return answer, time.monotonic() - started


# the profile's text and JSON forms ---------------------------------------------------------


def test_profiles_parse_ranges_fixed_delays_and_presets() -> None:
    profile = LatencyProfile.parse("fcm=30-60, APNS=20-80")
    assert profile.ranges == {"fcm": DelayRange(30, 60), "apns": DelayRange(20, 80)}
    assert str(profile) == "fcm=30-60,apns=20-80"
    assert LatencyProfile.parse("real") == profile
    assert LatencyProfile.parse("apns=50").ranges == {"apns": DelayRange(50, 50)}
    assert not LatencyProfile.parse("none") and str(LatencyProfile.parse("0")) == "none"
    body = {"fcm": {"min_ms": 30, "max_ms": 60}}
    assert LatencyProfile.from_json(body).ranges == {"fcm": DelayRange(30, 60)}


def test_delays_are_drawn_within_the_range() -> None:
    profile = LatencyProfile.parse("fcm=30-60")
    draws = [profile.delay("fcm") for _ in range(2000)]
    assert min(draws) >= 0.030 and max(draws) <= 0.060
    assert max(draws) - min(draws) > 0.02  # jitter, not a fixed delay
    assert profile.delay("apns") == 0.0


@pytest.mark.parametrize(
    "text",
    ["fcm=60-30", "gcm=10", "fcm", "fcm=abc", "fcm=-5", "fcm=10,fcm=20", "apns=1-99999999"],
)
def test_bad_profiles_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LatencyProfile.parse(text)


# the running emulator ------------------------------------------------------------------------


async def test_a_push_waits_at_least_the_fixed_delay_of_its_platform_only(client, emu) -> None:
    await emu.control.set_latency("apns=400-450")
    answer, took = await _timed(_push(client, emu))
    assert answer.status_code == 200
    assert took >= 0.4
    # FCM has no range here, and the token endpoint never waits: both answer well before
    token_answer, token_took = await _timed(
        client.post("/token", data={"grant_type": GRANT, "assertion": _assertion(_account(emu))})
    )
    assert token_answer.status_code == 200 and token_took < 0.4
    access = token_answer.json()["access_token"]
    sent, sent_took = await _timed(_send(client, emu, MESSAGE, access))
    assert sent.status_code == 200 and sent_took < 0.4
    await emu.control.set_latency("fcm=300")
    sent, sent_took = await _timed(_send(client, emu, MESSAGE, access))
    assert sent.status_code == 200 and sent_took >= 0.3


async def test_an_error_answer_waits_too(client, emu) -> None:
    await emu.control.set_latency("apns=300")
    await emu.control.bad(DEVICE)
    answer, took = await _timed(_push(client, emu))
    assert answer.status_code == 400 and took >= 0.3


async def test_concurrent_pushes_overlap_on_one_connection(client, emu) -> None:
    n, delay = 60, 0.3
    await emu.control.set_latency("apns=300,fcm=300")
    await _push(client, emu)  # the connection is open: what follows are streams on it
    access = await _access_token(client, emu)
    started = time.monotonic()
    answers = await asyncio.gather(
        *(_push(client, emu) for _ in range(n // 2)),
        *(_send(client, emu, MESSAGE, access) for _ in range(n // 2)),
    )
    wall = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * n
    assert delay <= wall < n * delay / 6  # serialized, it would take n x delay = 18 s


async def test_admin_api_sets_reads_and_resets_the_profile(client, emu) -> None:
    assert (await emu.control.latency())["profile"] == "none"
    body = {"fcm": {"min_ms": 30, "max_ms": 60}, "apns": {"min_ms": 20, "max_ms": 80}}
    answer = await client.post("/_emulator/latency", json=body)
    assert answer.status_code == 200
    assert answer.json() == {**body, "profile": "fcm=30-60,apns=20-80", "distribution": "uniform"}
    assert (await emu.control.latency())["apns"] == {"min_ms": 20, "max_ms": 80}
    assert (await emu.control.reset_latency())["profile"] == "none"
    await emu.control.set_latency("real")
    await emu.control.reset()
    assert (await emu.control.latency())["profile"] == "none"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"fcm": {"min_ms": 60, "max_ms": 30}}, "min_ms <= max_ms"),
        ({"gcm": {"min_ms": 10, "max_ms": 20}}, "unknown platform 'gcm'"),
        ({"fcm": {"min_ms": 1.5, "max_ms": 20}}, "whole milliseconds"),
        ({"fcm": {"min_ms": -1, "max_ms": 20}}, "min_ms <= max_ms"),
        ({"fcm": {"min_ms": True, "max_ms": 20}}, "whole milliseconds"),
        ({"fcm": [30, 60]}, "object with min_ms and max_ms"),
        ({"profile": "fcm=abc"}, "whole milliseconds"),
        ({"profile": 5}, "profile must be a string"),
    ],
)
async def test_bad_profile_values_are_a_400_and_change_nothing(client, emu, body, words) -> None:
    await emu.control.set_latency("apns=5")
    answer = await client.post("/_emulator/latency", json=body)
    assert answer.status_code == 400
    assert words in answer.json()["error"]
    assert (await emu.control.latency())["profile"] == "apns=5"


async def test_the_profile_given_at_start_holds_and_is_what_reset_restores(tmp_path) -> None:
    async with run_emulator(tmp_path, latency="apns=250") as emu:
        assert (await emu.control.latency())["profile"] == "apns=250"
        await emu.control.set_latency("none")
        await emu.control.reset()
        assert (await emu.control.latency())["profile"] == "apns=250"
        context = ssl.create_default_context(cafile=str(emu.ca_file))
        async with httpx.AsyncClient(
            base_url=emu.endpoint, http2=True, verify=context, trust_env=False
        ) as client:
            answer, took = await _timed(_push(client, emu))
        assert answer.status_code == 200 and took >= 0.25


def test_a_bad_latency_flag_stops_the_emulator_with_one_line(tmp_path, capsys) -> None:
    assert emulator_main(["--keys", str(tmp_path), "--latency", "fcm=60-30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("notifier emulator: --latency: ") and "min_ms <= max_ms" in err
