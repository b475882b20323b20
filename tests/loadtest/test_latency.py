"""``notifier bench --provider-latency``: checked before anything runs, set on the stack's
emulator for the run, and the emulator's previous profile put back afterwards."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from emulator.testing import EmulatorHandle
from loadtest.bench import main as bench_main
from loadtest.latency import check_profile, provider_latency
from notifier_tools.stack.components import Ports, StackConfig


@pytest.fixture
async def emu(emulator: EmulatorHandle) -> EmulatorHandle:
    await emulator.control.reset()
    return emulator


def _stack_of(emu: EmulatorHandle, run_dir: Path) -> StackConfig:
    """A stack config whose emulator is the session's (only what the bench reads of it)."""
    config = StackConfig(
        run_dir=str(run_dir),
        store_url="postgresql://unused",
        ports=Ports(emulator=urlsplit(emu.endpoint).port or 0),
    )
    config.keys_dir.mkdir(parents=True)
    shutil.copy(emu.ca_file, config.ca_file)
    return config


def test_the_profile_is_checked_first() -> None:
    assert check_profile(None) is None
    assert check_profile("real") is None
    assert check_profile("fcm=30-60,apns=20-80") is None
    problem = check_profile("fcm=60-30")
    assert problem is not None and problem.startswith("--provider-latency: ")


def test_a_bad_profile_stops_the_bench_with_one_line(capsys, tmp_path) -> None:
    argv = ["--notifications", "10", "--provider-latency", "apns=fast"]
    assert bench_main([*argv, "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("notifier bench: --provider-latency: ")


async def test_the_profile_holds_for_the_run_and_the_previous_one_comes_back(emu, tmp_path) -> None:
    config = _stack_of(emu, tmp_path)
    await emu.control.set_latency("apns=5")
    async with provider_latency(config, "real") as described:
        assert described == "fcm=30-60,apns=20-80 ms (uniform)"
        assert (await emu.control.latency())["profile"] == "fcm=30-60,apns=20-80"
    assert (await emu.control.latency())["profile"] == "apns=5"
    with pytest.raises(RuntimeError):
        async with provider_latency(config, "fcm=50"):
            raise RuntimeError("the run failed")
    assert (await emu.control.latency())["profile"] == "apns=5"
    async with provider_latency(config, None) as described:  # no flag: reported, untouched
        assert described == "apns=5 ms (uniform)"
    await emu.control.reset()
