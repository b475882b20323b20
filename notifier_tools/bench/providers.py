"""Benchmark HTTP/2 push clients against the local emulator: pushes/s and pushes per CPU-second.

Starts the emulator in its own process (``emulator.testing.run_emulator``, so its CPU is not
counted against the client), then drives each candidate with the same APNs push (and FCM for
our client) at a fixed number of requests in flight. The client's CPU is this process's CPU
time, native threads included. Prints a Markdown table (docs/providers.md records one).

    .venv/bin/python -m notifier_tools.bench.providers [--count 20000] [--concurrency 256]
        [--only notifier-apns,httpx-h2,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson

from emulator.testing import run_emulator
from loadtest.resources import family_cpu_seconds
from notifier import eventloop
from notifier.models import Notification, Platform, Target, new_id
from notifier.providers.factory import build_providers
from notifier.settings import Settings, load_settings

TOKEN = "ab" * 32
PAYLOAD = orjson.dumps({"aps": {"alert": {"title": "Hi", "body": "benchmark"}}, "k": "v"})

SendFn = Callable[[int], Awaitable[bool]]
CloseFn = Callable[[], Awaitable[None]]


@dataclass
class Row:
    name: str
    pushes: int
    ok: int
    seconds: float
    cpu_seconds: float
    emulator_cpu_seconds: float

    def cells(self) -> list[str]:
        rate = self.pushes / self.seconds
        per_cpu = self.pushes / self.cpu_seconds if self.cpu_seconds else float("inf")
        return [
            self.name,
            f"{self.pushes}",
            f"{self.ok}",
            f"{rate:,.0f}",
            f"{per_cpu:,.0f}",
            f"{self.emulator_cpu_seconds:.1f}",
        ]


# -- candidates ------------------------------------------------------------------------------


def _notifications(platform_: Platform, count: int) -> list[Notification]:
    now = datetime.now(UTC)
    return [
        Notification(
            id=new_id(),
            app="bench",
            target=Target(platform_, TOKEN),
            created_at=now,
            updated_at=now,
            title="Hi",
            body="benchmark",
            data={"k": "v"},
        )
        for _ in range(count)
    ]


async def notifier_client(settings: Settings, platform_: Platform, count: int) -> Any:
    provider = build_providers(settings)[platform_]
    batch = _notifications(platform_, count)

    async def send(i: int) -> bool:
        return (await provider.send(batch[i])).sent

    return send, provider.close


def _apns_jwt(settings: Settings) -> str:
    assert settings.apns_key_file is not None
    return jwt.encode(
        {"iss": settings.apns_team_id, "iat": int(time.time())},
        settings.apns_key_file.read_bytes(),
        algorithm="ES256",
        headers={"kid": settings.apns_key_id},
    )


def _apns_headers(settings: Settings, bearer: str) -> dict[str, str]:
    return {
        "authorization": f"bearer {bearer}",
        "apns-topic": settings.apns_topic or "",
        "apns-push-type": "alert",
        "apns-priority": "10",
    }


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


async def pyreqwest_raw(settings: Settings, count: int) -> Any:
    from pyreqwest.client import ClientBuilder

    assert settings.provider_ca_file is not None
    client = (
        ClientBuilder()
        .http2_prior_knowledge()
        .add_root_certificate_pem(settings.provider_ca_file.read_bytes())
        .build()
    )
    url = f"{settings.apns_endpoint}/3/device/{TOKEN}"
    headers, ids = _apns_headers(settings, _apns_jwt(settings)), _ids(count)

    async def send(i: int) -> bool:
        req = client.post(url).headers({**headers, "apns-id": ids[i]}).body_bytes(PAYLOAD)
        response = await req.build().send()
        await response.bytes()
        return response.status == 200

    return send, client.close


async def httpx_h2(settings: Settings, count: int) -> Any:
    import httpx

    context = ssl.create_default_context()
    context.load_verify_locations(str(settings.provider_ca_file))
    client = httpx.AsyncClient(http2=True, verify=context, trust_env=False, timeout=30)
    url = f"{settings.apns_endpoint}/3/device/{TOKEN}"
    headers, ids = _apns_headers(settings, _apns_jwt(settings)), _ids(count)

    async def send(i: int) -> bool:
        response = await client.post(url, headers={**headers, "apns-id": ids[i]}, content=PAYLOAD)
        return response.status_code == 200 and response.http_version == "HTTP/2"

    return send, client.aclose


async def curl_cffi_h2(settings: Settings, count: int, concurrency: int) -> Any:
    from curl_cffi.const import CurlHttpVersion
    from curl_cffi.requests import AsyncSession

    # ``verify=<file>`` REPLACES the system roots with our CA (CURLOPT_CAINFO)
    session: AsyncSession[Any] = AsyncSession(
        max_clients=concurrency,
        http_version=CurlHttpVersion.V2TLS,
        verify=str(settings.provider_ca_file),  # type: ignore[arg-type]
        trust_env=False,
        timeout=30,
    )
    url = f"{settings.apns_endpoint}/3/device/{TOKEN}"
    headers, ids = _apns_headers(settings, _apns_jwt(settings)), _ids(count)

    async def send(i: int) -> bool:
        response = await session.post(url, headers={**headers, "apns-id": ids[i]}, data=PAYLOAD)
        return bool(response.status_code == 200)

    return send, session.close


async def aioapns_client(settings: Settings, count: int, port: int) -> Any:
    from aioapns import APNs, NotificationRequest
    from aioapns.connection import APNsProductionClientProtocol

    class LocalProtocol(APNsProductionClientProtocol):
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    context = ssl.create_default_context(cafile=str(settings.provider_ca_file))
    context.set_alpn_protocols(["h2"])
    assert settings.apns_key_file is not None
    client = APNs(
        key=settings.apns_key_file.read_text(),
        key_id=settings.apns_key_id,
        team_id=settings.apns_team_id,
        topic=settings.apns_topic,
        ssl_context=context,
        max_connections=4,
    )
    client.pool.protocol_class = LocalProtocol
    ids = _ids(count)
    message = orjson.loads(PAYLOAD)

    async def send(i: int) -> bool:
        request = NotificationRequest(device_token=TOKEN, message=message, notification_id=ids[i])
        result = await client.send_notification(request)
        return bool(result.is_successful)

    async def close() -> None:
        client.pool.close()

    return send, close


# -- driver ----------------------------------------------------------------------------------


async def drive(send: SendFn, count: int, concurrency: int) -> int:
    counter = iter(range(count))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for i in counter:
            sent = await send(i)
            ok += sent

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def measure(
    name: str, factory: Callable[[int], Awaitable[Any]], args: argparse.Namespace, emu_pid: int
) -> Row:
    warm = 500
    send, close = await factory(args.count + warm)
    try:
        await drive(send, warm, min(args.concurrency, 50))
        shifted: SendFn = lambda i: send(i + warm)  # noqa: E731
        emu_cpu, cpu, start = family_cpu_seconds(emu_pid), time.process_time(), time.perf_counter()
        ok = await drive(shifted, args.count, args.concurrency)
        seconds = time.perf_counter() - start
        cpu_used, emu_used = time.process_time() - cpu, family_cpu_seconds(emu_pid) - emu_cpu
    finally:
        await close()
    return Row(name, args.count, ok, seconds, cpu_used, emu_used)


def candidates(settings: Settings, args: argparse.Namespace, port: int) -> dict[str, Any]:
    return {
        "notifier-apns (pyreqwest)": lambda n: notifier_client(settings, Platform.APNS, n),
        "notifier-fcm (pyreqwest)": lambda n: notifier_client(settings, Platform.FCM, n),
        "pyreqwest raw": lambda n: pyreqwest_raw(settings, n),
        "curl-cffi AsyncSession h2": lambda n: curl_cffi_h2(settings, n, args.concurrency),
        "aioapns 4.0": lambda n: aioapns_client(settings, n, port),
        "httpx + h2": lambda n: httpx_h2(settings, n),
    }


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    head = ["client", "pushes", "ok", "pushes/s", "pushes per client CPU-s", "emulator CPU-s"]
    print(
        f"\n{args.count} pushes per client, {args.concurrency} in flight, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform(terse=True)}\n"
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as keys:
        async with run_emulator(Path(keys)) as emu:
            settings = load_settings(emu.env)
            table = candidates(settings, args, urlsplit(emu.endpoint).port or 443)
            chosen = args.only.split(",") if args.only else list(table)
            rows = []
            for prefix in chosen:
                name, factory = next((k, v) for k, v in table.items() if k.startswith(prefix))
                print(f"running {name} ...", file=sys.stderr, flush=True)
                rows.append(await measure(name, factory, args, emu.pid))
            print_table(rows, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="pushes per client")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    parser.add_argument("--only", default="", help="comma-separated client name prefixes")
    args = parser.parse_args(argv)
    eventloop.run(run(args))  # the loop the worker runs on
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
