"""``notifier bench --provider-latency PROFILE``: the stack's emulator answers like a real
provider for the run (:mod:`emulator.latency`), and is put back as it was after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from emulator.control import EmulatorControl
from emulator.latency import DISTRIBUTION, LatencyProfile
from notifier_tools.stack.components import StackConfig


def check_profile(text: str | None) -> str | None:
    """The problem with ``--provider-latency``, or ``None``."""
    if text is None:
        return None
    try:
        LatencyProfile.parse(text)
    except ValueError as exc:
        return f"--provider-latency: {exc}"
    return None


def describe(text: str | None) -> str:
    """``fcm=30-60,apns=20-80 ms (uniform)`` or ``none``, for the figures."""
    profile = LatencyProfile.parse(text or "none")
    return f"{profile} ms ({DISTRIBUTION})" if profile else "none"


@asynccontextmanager
async def provider_latency(config: StackConfig, text: str | None) -> AsyncIterator[str]:
    """Set ``text`` on the stack's emulator for the block (nothing when ``None``); yields
    the profile in force, described. The profile found before is restored on the way out,
    also when the run fails or is interrupted."""
    async with EmulatorControl(config.emulator_url, config.ca_file) as control:
        before = await control.latency()
        if text is None:
            yield describe(before["profile"])
            return
        await control.set_latency(text)
        try:
            yield describe(text)
        finally:
            await control.set_latency(before["profile"])
