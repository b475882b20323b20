"""CPU and memory of each stack component during a bench run (psutil, by recorded PID).

Components come from the stack's PID files (workers restarted by the bench are picked up
on the next sample), plus RabbitMQ and PostgreSQL found by their listening ports, plus the
bench itself. CPU is user+system seconds over the run (children included, e.g. nginx's
workers), shown as a share of one core; RSS is the largest total seen. The machine's
total and "other processes" (everything not ours) show how much the run had to share.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from notifier_tools.stack.processes import load_records, process_of

SERVICE_PORTS = {"rabbitmq": 5672, "postgresql": 5432}
MIN_SAMPLE_INTERVAL_SECONDS = 1.0


@dataclass(slots=True)
class _Usage:
    # (pid, create time) -> CPU seconds at the first and the last look
    cpu_start: dict[tuple[int, float], float] = field(default_factory=dict)
    cpu_last: dict[tuple[int, float], float] = field(default_factory=dict)
    rss_max: int = 0

    def cpu_seconds(self) -> float:
        return sum(self.cpu_last[p] - self.cpu_start.get(p, 0.0) for p in self.cpu_last)


def _family(proc: psutil.Process) -> list[tuple[int, float, float, int]]:
    """``(pid, create_time, cpu seconds, rss)`` of the process and each of its descendants."""
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            t = p.cpu_times()
            out.append((p.pid, p.create_time(), t.user + t.system, p.memory_info().rss))
    return out


def _listener_pid(port: int) -> int | None:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid else None
    except (psutil.AccessDenied, OSError):
        return None
    return None


def service_pids(ports: Mapping[str, int] = SERVICE_PORTS) -> dict[str, int | None]:
    """The services' PIDs, found by their listening ports (None: not found)."""
    return {name: _listener_pid(port) for name, port in ports.items()}


def service_ports(amqp_url: str, store_url: str) -> dict[str, int]:
    """RabbitMQ's and the store's ports on this machine, read from their URLs; the store is
    named by its kind (``postgresql`` or ``mongodb``), so its server's CPU is counted too."""
    kind = "mongodb" if store_url.startswith("mongodb") else "postgresql"
    default = {"mongodb": 27017, "postgresql": 5432}[kind]
    return {"rabbitmq": _port(amqp_url, 5672), kind: _port(store_url, default)}


def _port(url: str, default: int) -> int:
    """The first host's port in ``url`` (a MongoDB URL may list several hosts)."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1].split(",")[0]
    _, _, port = netloc.rpartition(":")
    return int(port) if port.isdigit() else default


def family_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) so far of a process and its live descendants."""
    try:
        return sum(cpu for _, _, cpu, _ in _family(psutil.Process(pid)))
    except psutil.NoSuchProcess:
        return 0.0


class ResourceSampler:
    """Call :meth:`sample` now and then (about once a second); read :meth:`summary` at the end."""

    def __init__(self, pids_dir: Path, ports: Mapping[str, int] = SERVICE_PORTS) -> None:
        self.pids_dir = pids_dir
        self.started = time.time()
        self.usage: dict[str, _Usage] = {}
        self.services = service_pids(ports)
        self.machine_start = _machine_busy_seconds()
        self.load_start = os.getloadavg()[0]
        self.last_sample = 0.0
        self.sample(force=True)

    def _targets(self) -> list[tuple[str, psutil.Process]]:
        targets: list[tuple[str, psutil.Process]] = []
        for record in load_records(self.pids_dir):
            proc = process_of(record)
            if proc is not None:
                targets.append((record.name, proc))
        for name, pid in self.services.items():
            if pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    targets.append((name, psutil.Process(pid)))
        targets.append(("bench", psutil.Process(os.getpid())))
        return targets

    def sample(self, *, force: bool = False) -> None:
        """Per process (children included, each by PID): CPU so far; RSS of the family now.

        At most once a second unless forced: walking PostgreSQL's backends costs CPU too.
        """
        now = time.monotonic()
        if not force and now - self.last_sample < MIN_SAMPLE_INTERVAL_SECONDS:
            return
        self.last_sample = now
        for name, proc in self._targets():
            usage = self.usage.setdefault(name, _Usage())
            rss = 0
            for pid, created, cpu, member_rss in _family(proc):
                key = (pid, created)
                if key not in usage.cpu_start:
                    usage.cpu_start[key] = 0.0 if created > self.started else cpu
                usage.cpu_last[key] = cpu
                rss += member_rss
            usage.rss_max = max(usage.rss_max, rss)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{component: {cpu_seconds, cpu_percent (of one core), rss_mb}}``."""
        self.sample(force=True)
        wall = max(1e-6, time.time() - self.started)
        out: dict[str, dict[str, float]] = {}
        for name in sorted(self.usage, key=_order):
            usage = self.usage[name]
            cpu = usage.cpu_seconds()
            out[name] = {
                "cpu_seconds": round(cpu, 2),
                "cpu_percent": round(100.0 * cpu / wall, 1),
                "rss_mb": round(usage.rss_max / 2**20, 1),
            }
        machine = _machine_busy_seconds() - self.machine_start
        ours = sum(u["cpu_seconds"] for u in out.values())
        out["other processes"] = {
            "cpu_seconds": round(max(0.0, machine - ours), 2),
            "cpu_percent": round(100.0 * max(0.0, machine - ours) / wall, 1),
            "rss_mb": 0.0,
        }
        out["machine"] = {
            "cpu_seconds": round(machine, 2),
            "cpu_percent": round(100.0 * machine / wall, 1),
            "rss_mb": round((psutil.virtual_memory().used) / 2**20, 1),
            "cores": float(psutil.cpu_count() or 1),
            "load_start": round(self.load_start, 2),
            "load_end": round(os.getloadavg()[0], 2),
        }
        return out


def _machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine (all cores), idle and iowait excluded."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _order(name: str) -> tuple[int, str]:
    kinds = ("nginx", "api", "worker", "emulator", "prometheus", "rabbitmq", "postgresql")
    kind = name.split("-")[0]
    return (kinds.index(kind) if kind in kinds else len(kinds), name)
