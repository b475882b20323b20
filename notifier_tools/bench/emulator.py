"""Benchmark the emulator alone: pushes/s it accepts over TLS + HTTP/2 on this machine.

Starts an emulator subprocess (emulator.testing.run_emulator), then drives APNs and FCM
sends with h2load (nghttp2's C load generator: ``apt-get install nghttp2-client``), so the
client is not the bottleneck, and checks the emulator's own count against h2load's.

    .venv/bin/python -m notifier_tools.bench.emulator [--requests 50000] [--clients 4]
        [--streams 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import psutil

from emulator.testing import EmulatorHandle, run_emulator

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def _apns_jwt(env: dict[str, str]) -> str:
    key = Path(env["NOTIFIER_APNS_KEY_FILE"]).read_text()
    claims = {"iss": env["NOTIFIER_APNS_TEAM_ID"], "iat": int(time.time())}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": env["NOTIFIER_APNS_KEY_ID"]})


def _fcm_assertion(credentials: Path) -> tuple[dict[str, str], str]:
    info = json.loads(credentials.read_text())
    now = int(time.time())
    claims = {
        "iss": info["client_email"],
        "aud": info["token_uri"],
        "scope": SCOPE,
        "iat": now,
        "exp": now + 3600,
    }
    assertion = jwt.encode(
        claims, info["private_key"], algorithm="RS256", headers={"kid": info["private_key_id"]}
    )
    return info, assertion


async def _fcm_token(handle: EmulatorHandle) -> tuple[str, str]:
    import ssl

    import httpx

    credentials = Path(handle.env["NOTIFIER_FCM_CREDENTIALS"])
    info, assertion = await asyncio.to_thread(_fcm_assertion, credentials)
    ctx = ssl.create_default_context(cafile=str(handle.ca_file))
    async with httpx.AsyncClient(verify=ctx, trust_env=False) as client:
        answer = await client.post(
            info["token_uri"], data={"grant_type": GRANT, "assertion": assertion}
        )
        answer.raise_for_status()
    return answer.json()["access_token"], info["project_id"]


def _h2load(url: str, headers: list[str], body: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = ["h2load", "-n", str(args.requests), "-c", str(args.clients), "-m", str(args.streams)]
    for header in headers:
        cmd += ["-H", header]
    cmd += ["-d", str(body), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    if rps is None or ok is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    return {"req_per_s": float(rps.group(1)), "2xx": int(ok.group(1))}


async def _run_one(
    name: str,
    handle: EmulatorHandle,
    url: str,
    headers: list[str],
    payload: bytes,
    args: argparse.Namespace,
) -> None:
    await handle.control.reset()
    proc = psutil.Process(handle.pid)
    with tempfile.NamedTemporaryFile(suffix=".json") as body:
        body.write(payload)
        body.flush()
        cpu0 = proc.cpu_times()
        started = time.perf_counter()
        result = await asyncio.to_thread(_h2load, url, headers, Path(body.name), args)
        elapsed = time.perf_counter() - started
        cpu1 = proc.cpu_times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    summary = await handle.control.summary()
    print(
        f"{name:5s} {result['req_per_s']:>9.0f} pushes/s  2xx={result['2xx']}"
        f"  emulator accepted={summary['accepted']}  emulator CPU {cpu / elapsed:.0%} of one core"
        f"  ({result['2xx'] / cpu:.0f} pushes per CPU-second)"
    )


async def main(args: argparse.Namespace) -> int:
    if shutil.which("h2load") is None:
        print("h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as keys_dir:
        async with run_emulator(Path(keys_dir)) as handle:
            env = handle.env
            apns_headers = [
                f"authorization: bearer {_apns_jwt(env)}",
                f"apns-topic: {env['NOTIFIER_APNS_TOPIC']}",
                "apns-push-type: alert",
                "apns-priority: 10",
                "content-type: application/json",
            ]
            apns_body = json.dumps({"aps": {"alert": {"title": "Hi", "body": "bench"}}})
            token = "ab" * 32
            load = f"h2load -n {args.requests} -c {args.clients} -m {args.streams}"
            print(f"{load} against {handle.endpoint}")
            await _run_one(
                "apns",
                handle,
                f"{handle.endpoint}/3/device/{token}",
                apns_headers,
                apns_body.encode(),
                args,
            )
            access, project = await _fcm_token(handle)
            fcm_body = {
                "message": {
                    "token": "bench-token-0001",
                    "data": {"k": "v"},
                    "notification": {"title": "Hi", "body": "bench"},
                    "android": {"priority": "HIGH", "ttl": "60s"},
                }
            }
            await _run_one(
                "fcm",
                handle,
                f"{handle.endpoint}/v1/projects/{project}/messages:send",
                [f"authorization: Bearer {access}", "content-type: application/json"],
                json.dumps(fcm_body).encode(),
                args,
            )
    return 0


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=4, help="HTTP/2 connections")
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams each")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(_args())))
