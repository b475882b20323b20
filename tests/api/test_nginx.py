"""The real nginx, with the repo's config, in front of two real API processes.

Shows: requests spread over both replicas; one replica killed (SIGKILL) costs no client
error beyond the requests in flight; past the per-address limit nginx answers 429
problem+json. Clients use distinct loopback source addresses (127.0.0.x) so that each
phase has its own per-address rate-limit bucket.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from emulator.testing import free_port
from notifier.apikeys import generate_key, hash_key
from notifier.models import utcnow
from notifier.nginxconf import TEMPLATE, render_nginx_config, upstream_servers
from notifier.settings import Settings, load_settings
from notifier.store import NotificationStore, open_store
from tests.api.conftest import APNS_TOKEN, delete_queues
from tests.api.processes import spawn_api, stop, wait_healthy
from tests.conftest import AMQP_URL
from tests.support import wait_for

NGINX = "/usr/sbin/nginx"
BODY = {"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "Hi"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed"),
]


@dataclass
class Front:
    url: str
    key: str
    run_dir: Path
    apis: list[subprocess.Popen[bytes]]
    api_ports: list[int]
    store: NotificationStore

    def session(self, source_ip: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(local_addr=(source_ip, 0), limit=100)
        headers = {"Authorization": f"Bearer {self.key}"}
        return aiohttp.ClientSession(self.url, connector=connector, headers=headers)

    def access_log(self) -> list[dict[str, Any]]:
        path = self.run_dir / "access.log"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


async def _start_nginx(run_dir: Path, port: int, api_ports: list[int]) -> subprocess.Popen[bytes]:
    conf = run_dir / "nginx.conf"
    conf.write_text(render_nginx_config(port, [f"127.0.0.1:{p}" for p in api_ports], run_dir))
    base = [NGINX, "-p", str(run_dir), "-e", str(run_dir / "error.log"), "-c", str(conf)]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    with (run_dir / "nginx.out").open("ab") as out:
        return subprocess.Popen([*base, "-g", "daemon off;"], stdout=out, stderr=out)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def front(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Front]:
    env = {
        "NOTIFIER_STORE_URL": pg_url,
        "NOTIFIER_AMQP_URL": AMQP_URL,
        "NOTIFIER_QUEUE": f"test.{os.getpid()}.{secrets.token_hex(4)}",
    }
    settings: Settings = load_settings(env)
    store = await open_store(settings)
    key = generate_key()
    await store.add_api_key("via-nginx", hash_key(key), utcnow())
    run_dir = tmp_path_factory.mktemp("nginx")
    api_ports = [free_port(), free_port()]
    apis = [spawn_api(settings, p, run_dir / f"api-{p}.log") for p in api_ports]
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for port, proc in zip(api_ports, apis, strict=True):
            await wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        port = free_port()
        nginx = await _start_nginx(run_dir, port, api_ports)
        await wait_healthy(f"http://127.0.0.1:{port}/health", nginx)
        yield Front(f"http://127.0.0.1:{port}", key, run_dir, apis, api_ports, store)
    finally:
        if nginx is not None:
            stop(nginx, signal.SIGQUIT)
        for proc in apis:
            stop(proc)
        await store.close()
        await delete_queues(settings)


def test_template_renders_like_envsubst_would(tmp_path: Path) -> None:
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("envsubst (gettext-base) is not installed")
    addresses = ["127.0.0.1:9001", "127.0.0.1:9002"]
    env = {
        "NGINX_LISTEN": "127.0.0.1:9000",
        "NGINX_API_SERVERS": upstream_servers(addresses),
        "NGINX_RUN_DIR": str(tmp_path.resolve()),
    }
    # As the official image does it: only the defined NGINX_* variables are substituted.
    shell_format = " ".join(f"${{{name}}}" for name in env)
    out = subprocess.run(
        [envsubst, shell_format], input=TEMPLATE.read_text(), capture_output=True, text=True,
        env=env, check=True,
    )  # fmt: skip
    assert out.stdout == render_nginx_config(9000, addresses, tmp_path)


async def test_requests_spread_over_both_replicas(front: Front) -> None:
    async with front.session("127.0.0.2") as session:

        async def post() -> int:
            async with session.post("/v1/notifications", json=BODY) as r:
                return r.status

        statuses = await asyncio.gather(*(post() for _ in range(40)))
    assert statuses == [202] * 40

    def upstreams() -> set[str]:
        posts = [e for e in front.access_log() if e["remote_addr"] == "127.0.0.2"]
        return {e["upstream_addr"] for e in posts} if len(posts) == 40 else set()

    seen = await wait_for(upstreams, timeout=10, what="40 POSTs in the access log")
    assert seen == {f"127.0.0.1:{p}" for p in front.api_ports}


async def test_body_over_64_kib_is_413_problem_at_the_front(front: Front) -> None:
    big = {**BODY, "body": "x" * 70_000}
    async with (
        front.session("127.0.0.5") as session,
        session.post("/v1/notifications", json=big) as r,
    ):
        assert r.status == 413
        assert r.content_type == "application/problem+json"


async def test_killing_a_replica_costs_only_the_requests_in_flight(front: Front) -> None:
    workers, accepted, failed = 8, [], []
    stop_at = asyncio.Event()

    async def client(n: int) -> None:
        async with front.session(f"127.0.0.{10 + n}") as session:
            while not stop_at.is_set():
                async with session.post("/v1/notifications", json=BODY) as r:
                    if r.status == 202:
                        accepted.append((await r.json())["id"])
                    else:
                        failed.append(r.status)
                await asyncio.sleep(0.02)  # ~40 r/s per source address, under nginx's 100

    tasks = [asyncio.create_task(client(n)) for n in range(workers)]
    await wait_for(lambda: len(accepted) >= 100, timeout=20, what="load running")
    front.apis[0].send_signal(signal.SIGKILL)
    front.apis[0].wait()
    killed_at = len(accepted)
    await wait_for(lambda: len(accepted) >= killed_at + 200, timeout=30, what="load after kill")
    stop_at.set()
    await asyncio.gather(*tasks)
    assert len(failed) <= workers, failed
    for nid in accepted[-20:]:
        assert await front.store.get(nid) is not None


async def test_past_the_per_address_limit_nginx_answers_429(front: Front) -> None:
    async with front.session("127.0.0.4") as session:

        async def get() -> tuple[int, str, str | None]:
            async with session.get("/health") as r:
                return r.status, r.content_type, r.headers.get("Retry-After")

        answers = await asyncio.gather(*(get() for _ in range(500)))
    limited = [a for a in answers if a[0] == 429]
    assert limited, "no 429 past 100 r/s with a burst of 200"
    assert all(a[1] == "application/problem+json" and a[2] == "1" for a in limited)
    assert sum(1 for a in answers if a[0] == 200) >= 200
