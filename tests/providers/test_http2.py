"""Connections sized for provider latency: more pushes in flight than one connection's
stream limit go over more connections (``NOTIFIER_PROVIDER_STREAMS_PER_CONNECTION``,
``NOTIFIER_PROVIDER_CONNECTIONS``), against an emulator that answers in 300 ms and
advertises 5 streams a connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from emulator.testing import EmulatorHandle, run_emulator
from notifier.models import Platform
from notifier.providers.factory import build_providers
from notifier.settings import load_settings
from tests.providers.support import fresh

DELAY = 0.3
STREAMS = 5
PUSHES = 20  # 4 connections' worth


@pytest.fixture(scope="module")
async def slow_emulator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    keys = tmp_path_factory.mktemp("slow-emulator")
    async with run_emulator(keys, latency="apns=300,fcm=300", max_streams=STREAMS) as emu:
        yield emu


async def _burst(emu: EmulatorHandle, platform: Platform, connections: int) -> tuple[float, int]:
    """Send PUSHES at once through a new client; the wall time and the connections it used."""
    settings = load_settings(
        emu.env, provider_streams_per_connection=STREAMS, provider_connections=connections
    )
    provider = build_providers(settings)[platform]
    before = (await emu.control.summary())["by_platform"][platform.value]["connections"]
    try:
        await provider.send(fresh(platform))  # warm: the token and the first connection
        started = time.monotonic()
        results = await asyncio.gather(*(provider.send(fresh(platform)) for _ in range(PUSHES)))
        wall = time.monotonic() - started
    finally:
        await provider.close()
    assert all(r.sent for r in results)
    after = (await emu.control.summary())["by_platform"][platform.value]["connections"]
    return wall, after - before


@pytest.mark.parametrize("platform", [Platform.APNS, Platform.FCM])
async def test_pushes_beyond_a_connections_streams_open_more_connections(
    slow_emulator, platform
) -> None:
    wall, used = await _burst(slow_emulator, platform, connections=4)
    assert used == 4
    # on one connection the server's limit queues them: PUSHES / STREAMS rounds of DELAY
    assert wall < PUSHES / STREAMS * DELAY


async def test_one_connection_honours_the_servers_stream_limit(slow_emulator) -> None:
    wall, used = await _burst(slow_emulator, Platform.APNS, connections=1)
    assert used == 1
    assert wall >= PUSHES / STREAMS * DELAY * 0.95  # queued, in rounds of STREAMS
