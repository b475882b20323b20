"""Real API processes for the tests that need them (schemathesis, nginx): start, wait, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from notifier.settings import Settings
from notifier_tools import procs
from notifier_tools.procs import free_port

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
    )
    env.update(extra)  # may override the defaults above (the log level, say)
    return env


def spawn_api(
    settings: Settings, port: int, log: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    """``python -m notifier api --port P`` on loopback; its output goes to ``log``.

    ``extra_env``: more variables for the process (``NOTIFIER_...=value``), or other values
    for those it sets."""
    argv = [sys.executable, "-m", "notifier", "api", "--host", "127.0.0.1", "--port", str(port)]
    return procs.spawn(argv, log=log, env=settings_env(settings, **extra_env), cwd=ROOT)


async def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    await procs.await_healthy(url, alive=proc, timeout=30, name=url)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int | None:
    """Signal the process (by its own PID) and reap it."""
    return procs.stop(proc, sig)


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
