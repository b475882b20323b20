"""The whole pipeline as a user runs it: ``stack up`` -> ``bench`` (plain, with kills) -> ``down``.

The stack runs in a temporary run folder on ports of its own, with its own database and
queue, so it never meets a user's stack or another test, once per store (``--store
postgresql`` and ``--store mongodb``). The bench runs are shortened versions of the README's
figures (shorter still on the MongoDB stand-in, by STANDIN_SCALE): they assert what the
product promises (nothing lost; no duplicate unless a worker was killed), never a speed.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from notifier.stack.processes import load_records, port_in_use
from tests.conftest import AMQP_URL, own_database

pytestmark = pytest.mark.slow

PORT_OFFSETS = (0, 1, 2, 3, 4, 10, 11)  # nginx, api x2, emulator, prometheus, workers x2


def _free_base() -> int:
    for _ in range(200):
        # Below the kernel's ephemeral range (32768+), where outgoing connections of the
        # processes started before nginx could take a port between the check and the bind.
        base = random.randrange(20_000, 32_000, 20)
        if not any(port_in_use(base + off) for off in PORT_OFFSETS):
            return base
    raise RuntimeError("no free port range for the test stack")


def _notifier(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        env={**os.environ, "NOTIFIER_AMQP_URL": AMQP_URL},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Stack:
    def __init__(self, run_dir: Path, base: int, sized: Callable[[int], int]) -> None:
        self.run_dir = run_dir
        self.base = base
        self.sized = sized

    def pids(self) -> dict[str, int]:
        return {r.name: r.pid for r in load_records(self.run_dir / "pids")}

    def bench(self, *args: str) -> dict[str, Any]:
        out = self.run_dir / f"bench-{secrets.token_hex(3)}.json"
        result = _notifier(
            "bench", "--run-dir", str(self.run_dir), "--json", str(out), *args, timeout=240
        )
        assert out.is_file(), f"bench wrote no summary:\n{result.stdout}\n{result.stderr}"
        summary: dict[str, Any] = json.loads(out.read_text())
        summary["exit_code"] = result.returncode
        return summary


@pytest.fixture(scope="module")
async def stack_db(store_kind: str, services: None) -> AsyncIterator[str]:
    """A database of the stack's own: its sweepers never meet other tests' leftovers."""
    async with own_database(store_kind) as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    store_kind: str,
    stack_db: str,
    sized: Callable[[int], int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    run_dir = tmp_path_factory.mktemp("stack")
    base = _free_base()
    result = _notifier(
        "stack", "up", "--run-dir", str(run_dir), "--skip-services",
        "--store", store_kind, "--store-url", stack_db, "--queue", f"e2e.{secrets.token_hex(4)}",
        "--lock-seconds", "10", "--workers", "2",
        "--nginx-port", str(base), "--api-port", str(base + 1),
        "--emulator-port", str(base + 3), "--prometheus-port", str(base + 4),
        "--worker-port", str(base + 10),
    )  # fmt: skip
    started = Stack(run_dir, base, sized)
    try:
        assert result.returncode == 0, f"stack up failed:\n{result.stdout}\n{result.stderr}"
        assert "status sent  emulator count 1" in result.stdout
        yield started
    finally:
        _notifier("stack", "down", "--run-dir", str(run_dir))


def test_a_second_up_reports_what_already_runs(stack: Stack) -> None:
    before = stack.pids()
    result = _notifier(
        "stack", "up", "--run-dir", str(stack.run_dir), "--skip-services", "--no-smoke"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == len(before) == 7
    assert stack.pids() == before


def test_status_shows_every_component_healthy(stack: Stack) -> None:
    result = _notifier("stack", "status", "--run-dir", str(stack.run_dir))
    assert result.returncode == 0, result.stdout
    for name, pid in stack.pids().items():
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(name))
        assert str(pid) in line and "running" in line and " ok " in line


def test_bench_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    total = stack.sized(3000)
    summary = stack.bench("--notifications", str(total), "--drain-timeout", "90")
    assert summary["submit"]["accepted"] == total
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert summary["delivery"]["sent"] == total
    assert summary["exit_code"] == 0


def test_bench_with_worker_kills_loses_nothing(stack: Stack) -> None:
    total = stack.sized(2000)
    summary = stack.bench(
        "--notifications", str(total), "--rate", "400", "--kill-worker-every", "1.5",
        "--drain-timeout", "90",
    )  # fmt: skip
    print(f"kills {len(summary['kills'])}, duplicates {summary['duplicates']}")
    assert summary["kills"], "no worker was killed during the run"
    assert summary["submit"]["accepted"] == total
    assert summary["lost"] == 0
    assert summary["exit_code"] == 0
    for name, pid in stack.pids().items():
        assert psutil.pid_exists(pid), f"{name} was not restarted"


def test_down_stops_exactly_what_up_started(stack: Stack) -> None:
    procs = []
    for pid in stack.pids().values():
        proc = psutil.Process(pid)
        procs += [proc, *proc.children(recursive=True)]
    # It outlives any `down` (killed below): its exit would not be down's doing.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        result = _notifier("stack", "down", "--run-dir", str(stack.run_dir))
        assert result.returncode == 0, result.stderr
        _, alive = psutil.wait_procs(procs, timeout=5)
        assert not alive, f"still running after down: {alive}"
        assert load_records(stack.run_dir / "pids") == []
        assert bystander.poll() is None  # a process the stack did not start is untouched
        assert not port_in_use(stack.base)
    finally:
        bystander.kill()
        bystander.wait()
