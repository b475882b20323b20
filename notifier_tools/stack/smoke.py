"""The end of ``stack up``: a few notifications end to end (one FCM, one APNs) through nginx.

Each must reach ``sent`` in ``GET /v1/notifications/{id}`` and be counted once by the
emulator; what happened is printed, so a new user sees the pipeline work at once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from notifier_tools.stack.components import StackConfig
from notifier_tools.stack.processes import StackError

SMOKE_TIMEOUT_SECONDS = 30.0


def smoke_payloads() -> list[dict[str, Any]]:
    run = secrets.token_hex(4)
    return [
        {
            "to": {"platform": "fcm", "token": f"stack-smoke-fcm-{run}"},
            "title": "Hello from notifier",
            "body": "FCM, end to end",
            "data": {"smoke": run},
        },
        {
            "to": {"platform": "apns", "token": secrets.token_hex(32)},
            "title": "Hello from notifier",
            "body": "APNs, end to end",
            "data": {"smoke": run},
        },
    ]


async def _post(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> str:
    async with session.post(f"{url}/v1/notifications", json=payload) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 202 or "id" not in body:
            raise StackError(f"POST /v1/notifications answered {resp.status}: {body}")
        return str(body["id"])


async def _wait_sent(session: aiohttp.ClientSession, url: str, nid: str) -> dict[str, Any]:
    deadline = time.monotonic() + SMOKE_TIMEOUT_SECONDS
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with session.get(f"{url}/v1/notifications/{nid}") as resp:
            body = await resp.json(content_type=None)
        if body.get("status") in ("sent", "failed", "expired", "cancelled"):
            return body
        await asyncio.sleep(0.1)
    raise StackError(f"notification {nid} not final after {SMOKE_TIMEOUT_SECONDS:.0f}s: {body}")


async def _wait_counted(config: StackConfig, nid: str) -> int:
    from emulator.control import EmulatorControl

    deadline = time.monotonic() + SMOKE_TIMEOUT_SECONDS
    async with EmulatorControl(config.emulator_url, config.ca_file) as control:
        while time.monotonic() < deadline:
            found = await control.delivery(nid)
            if found:
                return int(found["count"])
            await asyncio.sleep(0.1)
    return 0


async def _smoke(config: StackConfig, key: str, say: Callable[[str], None]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        for payload in smoke_payloads():
            platform = payload["to"]["platform"]
            started = time.monotonic()
            nid = await _post(session, config.base_url, payload)
            body = await _wait_sent(session, config.base_url, nid)
            count = await _wait_counted(config, nid)
            ms = (time.monotonic() - started) * 1000
            say(
                f"  {platform:<5} {nid}  status {body.get('status')}  "
                f"emulator count {count}  ({ms:.0f} ms)"
            )
            if body.get("status") != "sent" or count != 1:
                raise StackError(f"{platform} notification {nid} was not delivered once: {body}")


def run_smoke(config: StackConfig, key: str, say: Callable[[str], None]) -> None:
    """Send one FCM and one APNs notification through nginx; raise unless both arrive once."""
    say("end to end through nginx:")
    asyncio.run(_smoke(config, key, say))
