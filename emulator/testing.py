"""Starting an emulator subprocess for tests and benchmarks: :func:`run_emulator`.

Tooling, not the emulator server: it needs the tools extra (``notifier_tools.procs``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.control import EmulatorControl
from emulator.keys import ensure_keys
from emulator.tls import write_private
from notifier_tools import procs
from notifier_tools.procs import free_port

__all__ = ["EmulatorHandle", "free_port", "run_emulator"]

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

    async def fcm_project_file(self, project_id: str, directory: Path | None = None) -> Path:
        """Register a new service account for ``project_id`` and write its JSON (0600)
        to ``directory`` (default: the keys directory); returns the file's path."""
        info = await self.control.add_fcm_project(project_id)
        path = (directory or self.keys_dir) / f"fcm-{project_id}-{info['private_key_id'][:8]}.json"
        write_private(path, json.dumps(info, indent=2).encode())
        return path

    async def apns_key_file(
        self,
        directory: Path | None = None,
        *,
        team_id: str | None = None,
        key_id: str | None = None,
        topics: list[str] | None = None,
    ) -> tuple[Path, dict[str, Any]]:
        """Register a new APNs key and write its .p8 (0600) to ``directory`` (default:
        the keys directory); returns the path and ``{team_id, key_id, topics}``."""
        key = await self.control.add_apns_key(team_id, key_id, topics)
        path = (directory or self.keys_dir) / f"apns-{key['team_id']}-{key['key_id']}.p8"
        write_private(path, key.pop("key_pem").encode())
        return path, key


def _ours(pid: int) -> Callable[[bytes], bool]:
    """Accept a health answer only from this process: granian binds with SO_REUSEPORT."""

    def accept(body: bytes) -> bool:
        if json.loads(body).get("pid") != pid:
            raise RuntimeError("another server answers on the emulator's port")
        return True

    return accept


@asynccontextmanager
async def run_emulator(
    keys_dir: Path,
    *,
    host: str = "127.0.0.1",
    token_lifetime: int = 3600,
    latency: str | None = None,
    max_streams: int | None = None,
) -> AsyncIterator[EmulatorHandle]:
    """Start ``python -m emulator`` on a free port, yield its handle, stop it by PID.

    ``latency``: the emulator's ``--latency`` profile (:mod:`emulator.latency`);
    ``max_streams``: the HTTP/2 stream limit it advertises (``--max-streams``).
    """
    port = free_port(host)
    endpoint = f"https://{host}:{port}"
    keys = await asyncio.to_thread(ensure_keys, keys_dir, endpoint)
    argv = [sys.executable, "-m", "emulator", "--keys", str(keys_dir), "--host", host]
    argv += ["--port", str(port), "--token-lifetime", str(token_lifetime)]
    if latency is not None:
        argv += ["--latency", latency]
    if max_streams is not None:
        argv += ["--max-streams", str(max_streams)]
    process = procs.spawn(argv)
    control = EmulatorControl(endpoint, keys.ca_file)
    try:
        await procs.await_healthy(
            f"{endpoint}/_emulator/health",
            alive=process,
            timeout=START_TIMEOUT,
            ca_file=keys.ca_file,
            accept=_ours(process.pid),
            name="emulator",
        )
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
        await procs.astop(process, timeout=10)
