"""Child processes for the tools and the tests: start one, wait until it answers its health
check, stop it by PID. Written once here for the stack runner, the benches, the emulator
harness and the tests' API processes; the product itself never starts a process.

Only the standard library: the tests and ``emulator.testing`` import this without psutil.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

HEALTH_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


class StartError(RuntimeError):
    """A process exited during start-up or did not become healthy in time."""


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


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def check_health(
    url: str,
    *,
    ca_file: str | Path | None = None,
    timeout: float = 2.0,
    accept: Callable[[bytes], bool] | None = None,
) -> bool:
    """True when ``url`` answers 2xx (and ``accept(body)``, if given); for ``tcp://host:port``:
    when the port accepts connections."""
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").partition(":")
        return port_in_use(int(port), host)
    if not url.startswith(("http://", "https://")):
        return False
    try:
        context = None  # made inside: the CA file may not exist yet while the server starts
        if url.startswith("https"):
            context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
            if not 200 <= int(resp.status) < 300:
                return False
            return accept is None or accept(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def spawn(
    argv: Sequence[str],
    *,
    log: Path | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with no stdin, its output appended to ``log`` (a path or an open file;
    discarded when None). ``detached``: in its own session, so it outlives our terminal."""
    stdin = subprocess.DEVNULL
    if log is None:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=detached,
        )
    out = log.open("ab") if isinstance(log, Path) else log
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=detached,
        )
    finally:
        if isinstance(log, Path):
            out.close()  # the child holds its own copy


def wait_healthy(
    url: str,
    *,
    alive: Callable[[], bool] | subprocess.Popen[Any] | None = None,
    timeout: float = HEALTH_TIMEOUT_SECONDS,
    ca_file: str | Path | None = None,
    accept: Callable[[bytes], bool] | None = None,
    extra: Callable[[], bool] | None = None,
    name: str = "process",
    details: Callable[[], str] | None = None,
) -> None:
    """Poll ``url`` until it is healthy (and ``extra()`` holds); fail at once if the process
    exits (``alive``: its Popen, or a predicate), else after ``timeout`` seconds.

    ``details()`` is appended to the error (a log tail, say)."""
    if isinstance(alive, subprocess.Popen):
        proc = alive
        alive = lambda: proc.poll() is None  # noqa: E731
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise StartError(_with(f"{name} exited during start-up", details))
        if check_health(url, ca_file=ca_file, accept=accept) and (extra is None or extra()):
            return
        time.sleep(0.1)
    raise StartError(_with(f"{name} not healthy after {timeout:.0f}s at {url}", details))


async def await_healthy(url: str, **options: Any) -> None:
    """:func:`wait_healthy` for async callers (in a thread: the event loop keeps running)."""
    await asyncio.to_thread(wait_healthy, url, **options)


def _with(message: str, details: Callable[[], str] | None) -> str:
    return message if details is None else f"{message}:\n{details()}"


def stop(
    proc: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT_SECONDS,
) -> int | None:
    """Signal the process (by its own PID), wait ``timeout`` seconds, then SIGKILL; reap it.
    Returns its exit code (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def astop(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, **options: Any
) -> int | None:
    """:func:`stop` for async callers."""
    return await asyncio.to_thread(stop, proc, sig, **options)
