"""Processes of the local stack: spawn detached with a PID file, wait for health, stop by PID.

A PID file holds the PID and the process's start time, so a recycled PID is never taken
for ours: :func:`running` and :func:`stop` act only on the process that ``up`` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import psutil

from notifier_tools import procs

STOP_TIMEOUT_SECONDS = 30.0  # a worker drains its in-flight deliveries for up to 25 s


class StackError(Exception):
    """A component did not start, did not become healthy, or cannot be managed."""


@dataclass(frozen=True, slots=True)
class PidRecord:
    """What ``up`` wrote for one component: enough to find, check and stop exactly it."""

    name: str
    pid: int
    create_time: float
    port: int
    health_url: str
    log: str
    argv: list[str]
    ca_file: str | None = None  # trust for an https health URL

    def save(self, pids_dir: Path) -> None:
        pids_dir.mkdir(parents=True, exist_ok=True)
        path = pids_dir / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def load_records(pids_dir: Path) -> list[PidRecord]:
    """Every PID record in the folder, sorted by name."""
    if not pids_dir.is_dir():
        return []
    records = (PidRecord.load(p) for p in sorted(pids_dir.glob("*.json")))
    return [r for r in records if r is not None]


def process_of(record: PidRecord) -> psutil.Process | None:
    """The live process the record names, or None (gone, zombie or a recycled PID)."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.5:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def running(record: PidRecord) -> bool:
    return process_of(record) is not None


def open_private_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, readable by its owner only (0600), even if an older
    run left it 0644: logs can hold what a process was told (ids, user ids, hints)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    port: int,
    health_url: str,
    logs_dir: Path,
    pids_dir: Path,
    cwd: Path | None = None,
    ca_file: str | None = None,
) -> PidRecord:
    """Start ``argv`` detached (own session, output to ``logs/<name>.log``) and record it."""
    log_path = logs_dir / f"{name}.log"
    with open_private_log(log_path) as log:
        proc = procs.spawn(argv, log=log, env=env, cwd=cwd, detached=True)
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess as exc:
        raise StackError(f"{name} exited at once; see {log_path}") from exc
    record = PidRecord(
        name=name,
        pid=proc.pid,
        create_time=create_time,
        port=port,
        health_url=health_url,
        log=str(log_path),
        argv=list(argv),
        ca_file=ca_file,
    )
    record.save(pids_dir)
    return record


def wait_healthy(
    record: PidRecord,
    *,
    timeout: float = 60.0,
    extra: Callable[[], bool] | None = None,
) -> None:
    """Wait until the component answers its health check; fail early if it exits."""
    try:
        procs.wait_healthy(
            record.health_url,
            alive=lambda: running(record),
            timeout=timeout,
            ca_file=record.ca_file,
            extra=extra,
            name=record.name,
            details=lambda: log_tail(record.log),
        )
    except procs.StartError as exc:
        raise StackError(str(exc)) from None


def log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line[:300] for line in text[-lines:])


def _family(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [proc]


def stop(record: PidRecord, pids_dir: Path, *, timeout: float = STOP_TIMEOUT_SECONDS) -> str:
    """SIGTERM the recorded process, SIGKILL it (and its children) after ``timeout``.

    Returns what happened: ``stopped``, ``killed`` or ``not running``. The PID file goes.
    """
    proc = process_of(record)
    outcome = "not running"
    if proc is not None:
        family = _family(proc)
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs([proc], timeout=timeout)
        outcome = "stopped"
        if alive:
            outcome = "killed"
        leftovers = [p for p in family if _still_ours(p)]
        for p in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(leftovers, timeout=5)
    with contextlib.suppress(FileNotFoundError):
        (pids_dir / f"{record.name}.json").unlink()
    return outcome


def kill(record: PidRecord) -> bool:
    """SIGKILL the recorded process at once (a crash, for the bench); True if it was alive."""
    proc = process_of(record)
    if proc is None:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    psutil.wait_procs([proc], timeout=5)
    return True


def _still_ours(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes), as written by the emulator."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def pid_alive(pid: int) -> bool:
    """For tests and status lines: whether any process has this PID (zombies excluded)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
