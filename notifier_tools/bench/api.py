#!/usr/bin/env python3
"""Benchmark ingestion through nginx: single POSTs/s with p50/p99, batch notifications/s.

Starts, on loopback, its own PostgreSQL database and queue, two API processes
(``python -m notifier api``) and nginx with the repo's config (nginx/nginx.conf.template),
then drives load from several client processes with a minimal HTTP/1.1 client (prebuilt
requests on keep-alive connections, so the load generator takes little of the 2 cores).
Each client connection uses its own 127.0.0.x source address, i.e. it is one client of
nginx's per-address limit (100 r/s, burst 200), as many real upstream hosts would be.
Prints the median of the runs.

    .venv/bin/python -m notifier_tools.bench.api [--runs 3] [--duration 5] [--concurrency 64]

Needs RabbitMQ and PostgreSQL (scripts/services.sh up) and /usr/sbin/nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aio_pika
import orjson
import psutil

from loadtest.accounting import percentile
from notifier import eventloop
from notifier.apikeys import generate_key, hash_key
from notifier.broker import delete_queues
from notifier.models import utcnow
from notifier.settings import load_settings
from notifier.store import open_store
from notifier_tools import procs
from notifier_tools.bench.common import create_database, drop_database
from notifier_tools.nginxconf import render_nginx_config
from notifier_tools.procs import free_port

PG_ADMIN_URL = os.environ.get(
    "NOTIFIER_BENCH_POSTGRES_URL", "postgresql://notifier:notifier@127.0.0.1:5432/notifier"
)
AMQP_URL = os.environ.get("NOTIFIER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NGINX = "/usr/sbin/nginx"
TOKEN = "ab" * 32


def _item(i: int) -> dict[str, Any]:
    return {"to": {"platform": "apns", "token": TOKEN}, "title": "Hi", "body": f"n{i}"}


# -- load generation (runs in client processes) ------------------------------------------------
# A minimal HTTP/1.1 keep-alive client: each request is prebuilt bytes, each answer is parsed
# only as far as status and body. aiohttp's client took about 40 % of the machine at 1,500
# requests/s, CPU the system under test then lacked; this one takes a fraction of that.
class _Connection(asyncio.Protocol):
    """One keep-alive connection from its own source address; one request at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = _parse_response(self._buffer)
        if answer is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _parse_response(buffer: bytearray) -> tuple[int, bytes] | None:
    """Take one complete response (status, body) off ``buffer``; None while incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1").lower()
    start = end + 4
    if "transfer-encoding: chunked" in head:
        chunks, pos = bytearray(), start
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
            if len(buffer) < line_end + 2 + size + 2:
                return None
            chunks += buffer[line_end + 2 : line_end + 2 + size]
            pos = line_end + 2 + size + 2
            if size == 0:
                break
        del buffer[:pos]
        return int(head[9:12]), bytes(chunks)
    length = 0
    for line in head.split("\r\n")[1:]:
        if line.startswith("content-length:"):
            length = int(line[15:])
    if len(buffer) < start + length:
        return None
    body = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return int(head[9:12]), body


def _post_bytes(url: str, path: str, key: str, body: bytes) -> bytes:
    host = urlsplit(url).netloc
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connect(url: str, ip: str) -> _Connection:
    parts = urlsplit(url)
    _, connection = await asyncio.get_running_loop().create_connection(
        _Connection, parts.hostname or "127.0.0.1", parts.port or 80, local_addr=(ip, 0)
    )
    return connection


async def _single_worker(url: str, key: str, ip: str, until: float, lat: list[float]) -> int:
    errors = 0
    request = _post_bytes(url, "/v1/notifications", key, orjson.dumps(_item(0)))
    connection = await _connect(url, ip)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            status, _ = await connection.request(request)
            if status == 202:
                lat.append(time.perf_counter() - start)
            else:
                errors += 1
    finally:
        connection.close()
    return errors


async def _batch_worker(url: str, key: str, ip: str, until: float, size: int) -> tuple[int, int]:
    accepted = errors = 0
    body = orjson.dumps({"notifications": [_item(i) for i in range(size)]})
    request = _post_bytes(url, "/v1/notifications/batch", key, body)
    connection = await _connect(url, ip)
    try:
        while time.perf_counter() < until:
            status, answer = await connection.request(request)
            results = orjson.loads(answer)["results"] if status == 200 else []
            ok = sum(1 for x in results if "id" in x)
            accepted += ok
            errors += (size - ok) if status == 200 else 1
    finally:
        connection.close()
    return accepted, errors


def _client_process(args: tuple[str, str, str, list[str], float, int]) -> dict[str, Any]:
    mode, url, key, ips, duration, size = args

    async def run() -> dict[str, Any]:
        start = time.perf_counter()
        until = start + duration
        if mode == "single":
            lat: list[float] = []
            errs = await asyncio.gather(*(_single_worker(url, key, ip, until, lat) for ip in ips))
            return {"latencies": lat, "errors": sum(errs), "elapsed": time.perf_counter() - start}
        pairs = await asyncio.gather(*(_batch_worker(url, key, ip, until, size) for ip in ips))
        return {
            "accepted": sum(p[0] for p in pairs),
            "errors": sum(p[1] for p in pairs),
            "elapsed": time.perf_counter() - start,
        }

    return eventloop.run(run())


def _drive(mode: str, url: str, key: str, conns: int, procs: int, secs: float, size: int) -> Any:
    ips = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(conns)]
    chunks = [ips[i::procs] for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_client_process, [(mode, url, key, c, secs, size) for c in chunks])
    return parts, max(p["elapsed"] for p in parts)  # the load window, not process start-up


# -- the system under test --------------------------------------------------------------------
class Stack:
    """Two API processes and nginx, with a database and a queue of their own."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.db = ""
        self.queue = f"bench_api.{os.getpid()}.{secrets.token_hex(3)}"
        self.env = {"NOTIFIER_AMQP_URL": AMQP_URL, "NOTIFIER_QUEUE": self.queue}
        self.settings = load_settings(self.env)  # its store URL is set in start()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = free_port()
        self.key = generate_key()

    async def start(self) -> None:
        self.db, store_url = await create_database(PG_ADMIN_URL)
        self.env["NOTIFIER_STORE_URL"] = store_url
        self.settings = load_settings(self.env)
        store = await open_store(self.settings)
        await store.add_api_key("bench", hash_key(self.key), utcnow())
        await store.close()
        env = self.env | {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
        env["NOTIFIER_LOG_LEVEL"] = "warning"
        # One key sends everything here: lift its rate limit (a policy, not a capacity),
        # or the single-POST figure is the limit's 2 x (burst + rate x seconds).
        env["NOTIFIER_API_RATE_PER_SECOND"] = "1000000"
        env["NOTIFIER_API_RATE_BURST"] = "1000000"
        ports = [free_port(), free_port()]
        log = self.run_dir / "api.log"
        for p in ports:
            cmd = [sys.executable, "-m", "notifier", "api", "--port", str(p)]
            self.procs.append(procs.spawn(cmd, log=log, env=env))
        conf = self.run_dir / "nginx.conf"
        addresses = [f"127.0.0.1:{p}" for p in ports]
        conf.write_text(render_nginx_config(self.port, addresses, self.run_dir))
        for p, proc in zip(ports, self.procs, strict=True):
            await procs.await_healthy(f"http://127.0.0.1:{p}/health", alive=proc, name="api")
        error_log = str(self.run_dir / "error.log")
        base = [NGINX, "-p", str(self.run_dir), "-e", error_log, "-c", str(conf)]
        if await asyncio.to_thread(procs.spawn([*base, "-t"], log=log).wait) != 0:
            raise RuntimeError("nginx -t failed")
        nginx = procs.spawn([*base, "-g", "daemon off;"], log=log)
        self.procs.append(nginx)
        await procs.await_healthy(f"http://127.0.0.1:{self.port}/health", alive=nginx, name="nginx")

    def api_cpu_seconds(self) -> float:
        """CPU time used so far by the two API processes (user + system)."""
        total = 0.0
        for proc in self.procs[:2]:
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        return total

    async def stop(self) -> None:
        # nginx (the last) quits gracefully on SIGQUIT; the API processes on SIGTERM
        for n, proc in enumerate(self.procs):
            await procs.astop(proc, signal.SIGQUIT if n == 2 else signal.SIGTERM, timeout=30)
        if self.db:
            await drop_database(PG_ADMIN_URL, self.db)
        for attempt in range(10):  # the shared broker may be restarting: retry a while
            try:
                await delete_queues(self.settings)
                return
            except (OSError, aio_pika.exceptions.AMQPError):
                await asyncio.sleep(1 + attempt)
        print(f"could not delete queue {self.queue}; delete it by hand", file=sys.stderr)


def _per(cpu_seconds: float, count: float) -> float:
    return round(1000 * cpu_seconds / count, 3) if count else float("nan")


def _single_figures(parts: list[dict[str, Any]], elapsed: float) -> dict[str, float]:
    lat = sorted(x for p in parts for x in p["latencies"])
    return {
        "count": len(lat),
        "rps": len(lat) / elapsed,
        "p50_ms": 1000 * percentile(lat, 50),
        "p99_ms": 1000 * percentile(lat, 99),
        "errors": sum(p["errors"] for p in parts),
    }


async def _measure(args: argparse.Namespace, run_dir: Path) -> tuple[list[Any], list[Any]]:
    stack = Stack(run_dir)
    loop = asyncio.get_running_loop()
    singles: list[dict[str, float]] = []
    batches: list[dict[str, float]] = []
    try:
        await stack.start()
        url = f"http://127.0.0.1:{stack.port}"
        for run in range(args.runs):
            cpu = stack.api_cpu_seconds()
            parts, elapsed = await loop.run_in_executor(
                None, _drive, "single", url, stack.key, args.concurrency, args.clients,
                args.duration, 0,
            )  # fmt: skip
            single = _single_figures(parts, elapsed)
            single["api_cpu_ms_per_req"] = _per(stack.api_cpu_seconds() - cpu, single["count"])
            singles.append(single)
            cpu = stack.api_cpu_seconds()
            parts, elapsed = await loop.run_in_executor(
                None, _drive, "batch", url, stack.key, args.batch_concurrency, args.clients,
                args.duration, args.batch_size,
            )  # fmt: skip
            accepted = sum(p["accepted"] for p in parts)
            batches.append(
                {
                    "nps": accepted / elapsed,
                    "errors": sum(p["errors"] for p in parts),
                    "api_cpu_ms_per_notification": _per(stack.api_cpu_seconds() - cpu, accepted),
                }
            )
            print(f"run {run + 1}: single {singles[-1]}  batch {batches[-1]}", flush=True)
    finally:
        await stack.stop()
    return singles, batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=64, help="single-POST connections")
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        singles, batches = asyncio.run(_measure(args, Path(tmp)))
    med = {k: statistics.median(s[k] for s in singles) for k in singles[0]}
    nps = statistics.median(b["nps"] for b in batches)
    batch_cpu = statistics.median(b["api_cpu_ms_per_notification"] for b in batches)
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
    print(f"machine: {os.cpu_count()} CPUs; median of {args.runs} runs of {args.duration:g}s")
    print(
        f"single POST via nginx : {med['rps']:8.0f} req/s   p50 {med['p50_ms']:.1f} ms   "
        f"p99 {med['p99_ms']:.1f} ms   (concurrency {args.concurrency}, "
        f"errors {med['errors']:.0f})"
    )
    print(
        f"batch via nginx       : {nps:8.0f} notifications/s   ({args.batch_size} per request, "
        f"concurrency {args.batch_concurrency})"
    )
    print(
        f"API CPU per unit      : {med['api_cpu_ms_per_req']:.2f} ms per single POST, "
        f"{batch_cpu:.3f} ms per batched notification (both replicas, user + system)"
    )
    print(
        f"load average (1 min)  : {load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        "(the machine is shared: other load inflates latency and CPU per request)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
