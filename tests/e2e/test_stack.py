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
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from notifier_tools.procs import port_in_use
from notifier_tools.stack.processes import load_records
from tests.conftest import AMQP_URL, STANDIN_RATE, own_database

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
    def __init__(
        self, run_dir: Path, base: int, sized: Callable[[int], int], on_standin: bool
    ) -> None:
        self.run_dir = run_dir
        self.base = base
        self.sized = sized
        self.on_standin = on_standin

    def pids(self) -> dict[str, int]:
        return {r.name: r.pid for r in load_records(self.run_dir / "pids")}

    def bench(self, *args: str, rate: float | None = None) -> dict[str, Any]:
        """``notifier bench`` on the stack; at most STANDIN_RATE notifications/s on the
        stand-in (``rate``: the submission rate, default as fast as it goes)."""
        out = self.run_dir / f"bench-{secrets.token_hex(3)}.json"
        if self.on_standin:
            rate = min(rate or STANDIN_RATE, STANDIN_RATE)
        if rate is not None:
            args = (*args, "--rate", str(rate))
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
    on_standin: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    # The default run folder's shape (<checkout>/.run/stack), so that commands run in
    # <checkout> find the stack's settings as they do in a real checkout.
    run_dir = tmp_path_factory.mktemp("checkout") / ".run" / "stack"
    base = _free_base()
    result = _notifier(
        "stack", "up", "--run-dir", str(run_dir), "--skip-services",
        "--store", store_kind, "--store-url", stack_db, "--queue", f"e2e.{secrets.token_hex(4)}",
        "--lock-seconds", "10", "--workers", "2",
        "--nginx-port", str(base), "--api-port", str(base + 1),
        "--emulator-port", str(base + 3), "--prometheus-port", str(base + 4),
        "--worker-port", str(base + 10),
    )  # fmt: skip
    started = Stack(run_dir, base, sized, on_standin)
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


def test_apikey_create_beside_the_stack_makes_a_key_it_accepts(stack: Stack) -> None:
    """Run in the checkout without NOTIFIER_STORE_URL: the key is the stack's, so nginx and
    the API replicas answer 202 to it (it used to land in the default store: 401)."""
    checkout = stack.run_dir.parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    created = subprocess.run(
        [sys.executable, "-m", "notifier", "apikey", "create", "--app", "by-hand"],
        cwd=checkout, env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    body = json.dumps({"to": {"platform": "fcm", "token": "by-hand-token"}, "title": "Hi"})
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.base}/v1/notifications",
        data=body.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
    assert ".run/stack/env" in created.stderr  # and the command said whose settings it used


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
        "--notifications", str(total), "--kill-worker-every", "1.5", "--drain-timeout", "90",
        rate=400,
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
