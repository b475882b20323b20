"""Real API processes for the tests that need them (schemathesis, nginx): start, wait, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp

from emulator.testing import free_port
from notifier.settings import Settings
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(
        NOTIFIER_STORE_URL=settings.store_url,
        NOTIFIER_AMQP_URL=settings.amqp_url,
        NOTIFIER_QUEUE=settings.queue,
        NOTIFIER_LOG_LEVEL="warning",
        NOTIFIER_API_RATE_PER_SECOND=str(settings.api_rate_per_second),
        NOTIFIER_API_RATE_BURST=str(settings.api_rate_burst),
        **extra,
    )
    return env


def spawn_api(
    settings: Settings, port: int, log: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    """``python -m notifier api --port P`` on loopback; its output goes to ``log``.

    ``extra_env``: more variables for the process (``NOTIFIER_...=value``)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "notifier", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=settings_env(settings, **extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode}")
            try:
                async with session.get(url) as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=30, what=f"{url} healthy")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal the process (by its own PID) and reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextmanager
def running(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            stop(proc)


@asynccontextmanager
async def live_api(settings: Settings, log: Path, **extra_env: str) -> AsyncIterator[str]:
    """A real API process on a free loopback port, healthy; yields its base URL. Stopped
    (SIGTERM, must exit 0) on leaving, so ``log`` is complete afterwards."""
    port = free_port()
    proc = spawn_api(settings, port, log, **extra_env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(f"{base_url}/health", proc)
        yield base_url
    finally:
        assert stop(proc) == 0, "the API did not stop cleanly on SIGTERM"
