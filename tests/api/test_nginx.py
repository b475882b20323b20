"""The real nginx, with the repo's config, in front of two real API processes.

Shows: requests spread over both replicas; one replica killed (SIGKILL) costs no client
error beyond the requests in flight; past the per-address limit nginx answers 429
problem+json; a batch may be larger than other bodies; an upstream that cannot be reached
is 503, one that does not answer in time is 504. Clients use distinct loopback source
addresses (127.0.0.x) so that each phase has its own per-address rate-limit bucket.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
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
from notifier.broker import delete_queues
from notifier.models import utcnow
from notifier.settings import Settings, load_settings
from notifier.store import NotificationStore, open_store
from notifier_tools.nginxconf import TEMPLATE, render_nginx_config, upstream_servers
from tests.api.conftest import APNS_TOKEN, padded_json
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


async def _start_nginx(
    run_dir: Path, port: int, api_ports: list[int], **timeouts: str
) -> subprocess.Popen[bytes]:
    """nginx with the repo's config; ``timeouts`` shorten some of its timeouts, e.g.
    ``proxy_read_timeout="1s"`` (each must appear once in the config)."""
    config = render_nginx_config(port, [f"127.0.0.1:{p}" for p in api_ports], run_dir)
    for directive, value in timeouts.items():
        line = re.compile(rf"^(\s*){directive} \w+;$", re.MULTILINE)
        config, count = line.subn(rf"\g<1>{directive} {value};", config)
        assert count == 1, directive
    conf = run_dir / "nginx.conf"
    conf.write_text(config)
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


async def _refused_at_the_front(front: Front, source_ip: str, path: str, raw: bytes) -> str:
    """POST ``raw``; assert nginx answered 413 itself (no replica saw it); the detail."""
    headers = {"Content-Type": "application/json"}
    async with (
        front.session(source_ip) as session,
        session.post(path, data=raw, headers=headers) as r,
    ):
        assert r.status == 413
        assert r.content_type == "application/problem+json"
        problem = await r.json(content_type=None)

    def logged() -> list[dict[str, Any]]:
        return [e for e in front.access_log() if e["remote_addr"] == source_ip]

    entries = await wait_for(logged, timeout=10, what="the 413 in the access log")
    assert [(e["status"], e["upstream_addr"]) for e in entries] == [(413, "")]
    detail: str = problem["detail"]
    return detail


async def test_body_over_64_kib_is_413_problem_at_the_front(front: Front) -> None:
    raw = padded_json(BODY, 64 * 1024 + 1)
    detail = await _refused_at_the_front(front, "127.0.0.5", "/v1/notifications", raw)
    assert "64 KiB" in detail


async def test_batch_of_500_items_over_64_kib_is_accepted_at_the_front(front: Front) -> None:
    items = [{**BODY, "body": f"{i:03d}" + "x" * 200} for i in range(500)]
    raw = orjson.dumps({"notifications": items})
    assert 64 * 1024 < len(raw) < 2 * 1024 * 1024
    async with (
        front.session("127.0.0.6") as session,
        session.post(
            "/v1/notifications/batch", data=raw, headers={"Content-Type": "application/json"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        results = (await r.json())["results"]
    assert [a["status"] for a in results] == ["pending"] * 500
    stored = await asyncio.gather(*(front.store.get(a["id"]) for a in results))
    assert [n.body if n is not None else None for n in stored] == [i["body"] for i in items]


async def test_batch_over_2_mib_is_413_problem_at_the_front(front: Front) -> None:
    raw = padded_json({"notifications": [BODY] * 10}, 2 * 1024 * 1024 + 1)
    detail = await _refused_at_the_front(front, "127.0.0.7", "/v1/notifications/batch", raw)
    assert "2 MiB" in detail


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


@dataclass
class _StallingUpstream:
    """A TCP server on loopback that reads each request's head and never answers."""

    port: int
    heads: list[bytes]
    release: asyncio.Event


@pytest_asyncio.fixture
async def stalling_upstream() -> AsyncIterator[_StallingUpstream]:
    heads: list[bytes] = []
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await release.wait()
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        yield _StallingUpstream(port, heads, release)
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def _lone_nginx(
    tmp_path: Path, upstream_port: int, **timeouts: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """nginx in front of one upstream port, ready (its own /metrics answers 404)."""
    port = free_port()
    nginx = await _start_nginx(tmp_path, port, [upstream_port], **timeouts)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(url) as session:

        async def up() -> bool:
            assert nginx.poll() is None, f"nginx exited with {nginx.returncode}"
            try:
                async with session.get("/metrics") as r:
                    return r.status == 404
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=10, what="nginx listening")
    return url, nginx


async def _post_once(url: str) -> tuple[int, dict[str, Any], str | None]:
    async with (
        aiohttp.ClientSession(url) as session,
        session.post("/v1/notifications", json=BODY) as r,
    ):
        assert r.content_type == "application/problem+json"
        return r.status, await r.json(content_type=None), r.headers.get("Retry-After")


async def test_upstream_timeout_is_504_may_have_been_accepted(
    stalling_upstream: _StallingUpstream, tmp_path: Path
) -> None:
    """Not 503 "retry later": the replica had the POST and may have stored it."""
    url, nginx = await _lone_nginx(tmp_path, stalling_upstream.port, proxy_read_timeout="1s")
    try:
        status, problem, retry_after = await _post_once(url)
    finally:
        stop(nginx, signal.SIGQUIT)
    assert status == 504 and problem["status"] == 504
    assert problem["type"] == "https://notifier.dev/problems/gateway-timeout"
    assert "may have been accepted" in problem["detail"]
    assert "Idempotency-Key" in problem["detail"]
    assert retry_after is None
    assert [h.split(b" ", 2)[:2] for h in stalling_upstream.heads] == [
        [b"POST", b"/v1/notifications"]
    ]


async def test_unreachable_upstream_is_503_retry_later(tmp_path: Path) -> None:
    """A refused connection is nginx's 502, answered (status and document) as 503."""
    url, nginx = await _lone_nginx(tmp_path, free_port())  # nothing listens there
    try:
        status, problem, retry_after = await _post_once(url)
    finally:
        stop(nginx, signal.SIGQUIT)
    assert status == 503 and problem["status"] == 503
    assert problem["type"] == "https://notifier.dev/problems/service-unavailable"
    assert retry_after == "1"


# -- what nginx refuses itself ------------------------------------------------------------------


async def _raw_exchange(
    url: str, source_ip: str, raw: bytes, timeout: float = 10
) -> tuple[int, str, bytes]:
    """Send ``raw`` from ``source_ip``; (status, content type, body) of the answer, or
    (0, "", b"") when nginx closed the connection without one."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source_ip, 0))
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    if not data:
        return 0, "", b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split(" ")[1]), headers.get("content-type", ""), body


REFUSED_BY_NGINX = [
    ("bad-request-line", b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    ("not-http", b"\x16\x03\x01 hello\r\n\r\n", 400),
    ("bad-content-length", b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\n"
     b"Content-Length: abc\r\n\r\n", 400),
    ("header-too-large", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * 9000
     + b"\r\n\r\n", 431),
    ("uri-too-long", b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("unknown-transfer-encoding", b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: foo\r\n\r\n", 501),
    ("http-2-request-line", b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("internal-uri", b"GET /_problems/bad-request HTTP/1.1\r\nHost: x\r\n"
     b"Connection: close\r\n\r\n", 404),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "status"), [c[1:] for c in REFUSED_BY_NGINX], ids=[c[0] for c in REFUSED_BY_NGINX]
)
async def test_what_nginx_refuses_itself_is_a_problem_document(
    front: Front, raw: bytes, status: int
) -> None:
    answer_status, content_type, body = await _raw_exchange(front.url, "127.0.0.30", raw)
    assert (answer_status, content_type) == (status, "application/problem+json"), body
    problem = orjson.loads(body)
    assert problem["status"] == status and problem["detail"]


async def test_past_100_requests_in_progress_from_one_address_nginx_answers_429(
    front: Front,
) -> None:
    """Requests whose bodies never come hold nginx (it buffers bodies before proxying);
    past 100 at once from one address the next request is refused, others are not."""
    host, port = front.url.removeprefix("http://").split(":")
    head = (
        b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    held = []
    try:
        for _ in range(100):
            _reader, writer = await asyncio.open_connection(
                host, int(port), local_addr=("127.0.0.41", 0)
            )
            writer.write(head)
            held.append(writer)

        async def refused() -> dict[str, Any] | None:
            async with (
                front.session("127.0.0.41") as session,
                session.get("/health") as r,
            ):
                if r.status != 429:
                    return None
                assert r.content_type == "application/problem+json"
                assert r.headers.get("Retry-After") == "1"
                problem: dict[str, Any] = await r.json(content_type=None)
                return problem

        problem = await wait_for(refused, timeout=8, what="the 101st request refused")
        assert "100 requests in progress" in problem["detail"]
        async with front.session("127.0.0.42") as other, other.get("/health") as r:
            assert r.status == 200  # another address is not limited
    finally:
        for writer in held:
            writer.close()

    async def served_again() -> bool:
        async with front.session("127.0.0.41") as session, session.get("/health") as r:
            return r.status == 200

    await wait_for(served_again, timeout=10, what="the address served again")


@pytest.mark.parametrize("gap", [True, False], ids=["stalled-body", "stalled-head"])
async def test_a_stalled_client_is_cut_off_by_nginx(
    stalling_upstream: _StallingUpstream, tmp_path: Path, gap: bool
) -> None:
    """Past client_body_timeout or client_header_timeout (both 10 s, shortened to 1 s here)
    nginx closes the connection; the request never reaches a replica."""
    url, nginx = await _lone_nginx(
        tmp_path, stalling_upstream.port, client_body_timeout="1s", client_header_timeout="1s"
    )
    head = b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\n"
    if gap:
        head += b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    started = time.monotonic()
    try:
        status, _, _ = await _raw_exchange(url, "127.0.0.1", head)
    finally:
        stop(nginx, signal.SIGQUIT)
    assert status == 0  # closed without an answer: nginx sends none for a client timeout
    assert time.monotonic() - started < 3
    assert stalling_upstream.heads == []
