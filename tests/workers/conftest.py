"""Worker test helpers: notifications in the real store, worker subprocesses on own ports."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.testing import free_port
from notifier.broker import IDS_PER_MESSAGE, Broker
from notifier.models import Lane, Notification, Platform, Status, Target, new_id, utcnow
from notifier.settings import Settings
from notifier.store.base import NotificationStore
from notifier.store.factory import open_store
from tests.conftest import ROOT
from tests.support import wait_for


def apns_token() -> str:
    return secrets.token_hex(32)


def fcm_token() -> str:
    return "fcm-" + secrets.token_urlsafe(24)


def make_notification(
    platform: Platform = Platform.FCM,
    token: str | None = None,
    *,
    app: str = "app1",
    lane: Lane = Lane.TRANSACTIONAL,
    scheduled_for: datetime | None = None,
    ttl_seconds: int | None = None,
    created_at: datetime | None = None,
) -> Notification:
    now = created_at or utcnow()
    if token is None:
        token = fcm_token() if platform is Platform.FCM else apns_token()
    return Notification(
        id=new_id(),
        app=app,
        target=Target(platform, token),
        created_at=now,
        updated_at=now,
        title="Hi",
        body="there",
        data={"k": "v"},
        ttl_seconds=ttl_seconds,
        lane=lane,
        scheduled_for=scheduled_for,
        status=Status.SCHEDULED if scheduled_for else Status.PENDING,
    )


async def insert_and_publish(
    store: NotificationStore,
    broker: Broker | None,
    notes: Sequence[Notification],
    *,
    per_message: int = IDS_PER_MESSAGE,
) -> list[str]:
    """What the API does: insert, publish the ids (``per_message`` to a message), mark them
    published."""
    await store.insert_many(notes)
    pending = [n.wake for n in notes if n.status is Status.PENDING]
    if broker is not None and pending:
        for start in range(0, len(pending), 500):
            chunk = pending[start : start + 500]
            await broker.publish_wakes(chunk, per_message=per_message)
            await store.mark_published([w.id for w in chunk], utcnow())
    return [n.id for n in notes]


async def wait_final(
    store: NotificationStore, ids: Sequence[str], timeout: float = 60.0
) -> dict[str, Notification]:
    """Wait until every id has a final status; return them."""
    found: dict[str, Notification] = {}

    async def all_final() -> bool:
        for nid in ids:
            if nid in found:
                continue
            n = await store.get(nid)
            if n is None or not n.status.is_final:
                return False
            found[nid] = n
        return True

    await wait_for(all_final, timeout=timeout, interval=0.2, what="final statuses")
    return found


@dataclass
class WorkerProc:
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            return await client.get(self.url + path)

    async def healthy(self) -> bool:
        try:
            return (await self.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def stats(self) -> dict[str, Any]:
        return (await self.get("/stats")).json()  # type: ignore[no-any-return]

    def signal(self, sig: int) -> None:
        if self.process.returncode is None:
            os.kill(self.process.pid, sig)

    async def wait(self, timeout: float = 40.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class WorkerPool:
    """Starts worker subprocesses; stops (then kills) the ones still running at the end."""

    env: dict[str, str]
    tmp: Path
    procs: list[WorkerProc] = field(default_factory=list)

    async def start(self, concurrency: int = 32, **env: Any) -> WorkerProc:
        port = free_port()
        log_path = self.tmp / f"worker-{len(self.procs)}-{port}.log"
        full_env = {**os.environ, **self.env, **{k: str(v) for k, v in env.items()}}
        if (ROOT / "notifier" / "cli.py").exists() and (ROOT / "notifier/__main__.py").exists():
            cmd = ["-m", "notifier", "worker", "--metrics-port", str(port)]
            cmd += ["--concurrency", str(concurrency)]
        else:
            code = (
                "from notifier.settings import load_settings; from workers.main import serve; "
                f"serve(load_settings(), '127.0.0.1', {port}, {concurrency})"
            )
            cmd = ["-c", code]
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, *cmd, env=full_env, cwd=ROOT, stdout=log_file, stderr=log_file
            )
        proc = WorkerProc(process, port, log_path)
        self.procs.append(proc)
        try:
            await wait_for(proc.healthy, timeout=60, interval=0.1, what="worker /health")
        except AssertionError:
            raise AssertionError("worker did not become healthy:\n" + proc.log()[-3000:]) from None
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await proc.wait(30)
            except TimeoutError:
                proc.signal(signal.SIGKILL)
                await proc.wait()


@pytest.fixture
def worker_env(make_settings: Callable[..., Settings], emulator: Any) -> dict[str, str]:
    """Environment of this test's workers: its queue, the session database, the emulator."""
    settings = make_settings()
    return {
        "NOTIFIER_STORE_URL": settings.store_url,
        "NOTIFIER_AMQP_URL": settings.amqp_url,
        "NOTIFIER_QUEUE": settings.queue,
        "NOTIFIER_SWEEP_INTERVAL_SECONDS": "0.3",
        "NOTIFIER_RETRY_BASE_SECONDS": "0.2",
        "NOTIFIER_RETRY_MAX_SECONDS": "2",
        "NOTIFIER_LOG_LEVEL": "info",
        **emulator.env,
    }


@pytest.fixture
async def workers(worker_env: dict[str, str], tmp_path: Path) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(worker_env, tmp_path)
    yield pool
    await pool.close()


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[NotificationStore]:
    s = await open_store(make_settings())
    yield s
    await s.close()


@pytest.fixture
async def broker(make_settings: Callable[..., Settings]) -> AsyncIterator[Broker]:
    b = await Broker.connect(make_settings())
    yield b
    await b.close()


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


@pytest.fixture
def store_url(fresh_store_url: str) -> str:
    """A database per worker test: every worker runs a sweeper, and a sweeper must never
    republish another test's leftovers onto this test's queue."""
    return fresh_store_url
