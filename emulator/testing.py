"""Starting an emulator subprocess for tests and benchmarks: :func:`run_emulator`."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from emulator.control import EmulatorControl
from emulator.keys import ensure_keys

START_TIMEOUT = 20.0


@dataclass
class EmulatorHandle:
    """A running emulator: where it listens, what to trust, the product's settings."""

    endpoint: str
    ca_file: Path
    env: dict[str, str]
    control: EmulatorControl
    pid: int
    keys_dir: Path = field(default=Path())


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below the kernel's ephemeral range (32768+).

    A port the kernel hands out for ``bind(0)`` is an ephemeral one, which any outgoing
    connection (of the very processes a test starts) may take before the server binds it.
    """
    for _ in range(500):
        port = random.randrange(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


async def _wait_ready(process: asyncio.subprocess.Process, control: EmulatorControl) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"emulator exited with {process.returncode} at start")
        with suppress(httpx.HTTPError, OSError):
            health = await control.health()
            # granian binds with SO_REUSEPORT: make sure the answer is ours
            if health.get("pid") == process.pid:
                return
            raise RuntimeError("another server answers on the emulator's port")
        if loop.time() > deadline:
            raise RuntimeError(f"emulator did not answer within {START_TIMEOUT}s")
        await asyncio.sleep(0.05)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()


@asynccontextmanager
async def run_emulator(
    keys_dir: Path, *, host: str = "127.0.0.1", token_lifetime: int = 3600
) -> AsyncIterator[EmulatorHandle]:
    """Start ``python -m emulator`` on a free port, yield its handle, stop it by PID."""
    port = free_port(host)
    endpoint = f"https://{host}:{port}"
    keys = await asyncio.to_thread(ensure_keys, keys_dir, endpoint)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "emulator",
        "--keys",
        str(keys_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--token-lifetime",
        str(token_lifetime),
        stdout=asyncio.subprocess.DEVNULL,
    )
    control = EmulatorControl(endpoint, keys.ca_file)
    try:
        await _wait_ready(process, control)
        yield EmulatorHandle(
            endpoint=endpoint,
            ca_file=keys.ca_file,
            env=keys.product_env(endpoint),
            control=control,
            pid=process.pid,
            keys_dir=keys.directory,
        )
    finally:
        await control.close()
        await _stop(process)
