"""API latency at a steady, modest rate: single POSTs through nginx on a running stack.

The 1M notifications a day rate is about 12 requests a second: at that rate nothing queues,
so the latency is what one request costs the API and the store (issue 17 measures it as the
store grows). Open loop: requests start on a fixed schedule whatever the answers, so a slow
answer does not slow the probe down and hide itself.

    python -m loadtest.api_probe [--run-dir .run/stack] [--rate 12] [--seconds 60]

Prints p50, p90, p99 and max of the HTTP round trip (202 answers only; any other answer is
counted and shown). The notifications go to the stack's workers like any others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from loadtest.accounting import percentile
from notifier.apikeys import create_key
from notifier.settings import load_settings
from notifier_tools.stack.components import StackConfig


async def probe(config: StackConfig, rate: float, seconds: float) -> dict[str, Any]:
    settings = load_settings({}, store_url=config.store_url, amqp_url=config.amqp_url)
    app = f"probe-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    key = await create_key(settings, app)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{config.base_url}/v1/notifications"
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        body = orjson.dumps(
            {"to": {"platform": "apns", "token": f"{i:064x}"}, "title": "probe", "body": f"n{i}"}
        )
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        if status == "202":
            latencies.append((time.perf_counter() - start) * 1000.0)
        else:
            errors[status] = errors.get(status, 0) + 1

    total = int(rate * seconds)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await one(session, 10**12)  # warm the connection and the key cache; not counted
        latencies.clear()
        errors.clear()
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": total,
        "ok": len(ordered),
        "errors": errors,
        "p50_ms": round(percentile(ordered, 50), 2) if ordered else None,
        "p90_ms": round(percentile(ordered, 90), 2) if ordered else None,
        "p99_ms": round(percentile(ordered, 99), 2) if ordered else None,
        "max_ms": round(ordered[-1], 2) if ordered else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.api_probe", description=__doc__)
    parser.add_argument("--run-dir", default=".run/stack")
    parser.add_argument("--rate", type=float, default=12.0, help="requests/s (12: 1M a day)")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 1000 or not 0 < args.seconds <= 3600:
        print("api_probe: --rate must be 0..1000 and --seconds 0..3600", file=sys.stderr)
        return 2
    config = StackConfig.load(Path(args.run_dir).resolve())
    if config is None:
        print(f"api_probe: no stack in {args.run_dir}", file=sys.stderr)
        return 2
    result = asyncio.run(probe(config, args.rate, args.seconds))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
