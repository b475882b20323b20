"""Bring the local stack up, scale its workers, restart one, take it down: by PID files only.

Everything here acts on the processes recorded in the run folder; nothing looks processes
up by name, so a user's other nginx or Prometheus is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from notifier_tools.procs import port_in_use
from notifier_tools.stack.components import (
    START_ORDER,
    Component,
    StackConfig,
    all_components,
    notifier_argv,
    product_env,
    render_nginx,
    render_prometheus,
    worker_component,
)
from notifier_tools.stack.processes import (
    PidRecord,
    StackError,
    load_records,
    process_of,
    spawn,
    stop,
    wait_healthy,
)

Say = Callable[[str], None]
REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT_SECONDS = 90.0


def run_services(say: Say) -> None:
    """``scripts/services.sh up``: install what is missing, start RabbitMQ, PostgreSQL and the
    MongoDB-compatible stand-in (each reused if something already answers on its port)."""
    script = REPO_ROOT / "scripts" / "services.sh"
    say("services: RabbitMQ, PostgreSQL, MongoDB stand-in (scripts/services.sh up)")
    result = subprocess.run([str(script), "up"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"scripts/services.sh up failed:\n{result.stderr.strip()}")


def records_by_name(config: StackConfig) -> dict[str, PidRecord]:
    return {r.name: r for r in load_records(config.pids_dir)}


def _start_one(config: StackConfig, component: Component, env: dict[str, str]) -> PidRecord:
    if port_in_use(component.port):
        raise StackError(
            f"{component.name}: port {component.port} is already in use by another process; "
            "pick other ports (see `notifier stack up --help`) or stop that process"
        )
    record = spawn(
        component.name,
        component.argv,
        env=env,
        port=component.port,
        health_url=component.health_url,
        logs_dir=config.logs_dir,
        pids_dir=config.pids_dir,
        cwd=config.root,
        ca_file=str(config.ca_file) if component.health_url.startswith("https") else None,
    )
    extra = None
    if component.kind == "emulator":
        extra = (config.keys_dir / "notifier.env").is_file
    wait_healthy(record, timeout=HEALTH_TIMEOUT_SECONDS, extra=extra)
    return record


def ensure_component(
    config: StackConfig, component: Component, say: Say, *, env: dict[str, str] | None = None
) -> tuple[PidRecord, bool]:
    """Start the component unless its recorded process runs; True when started now."""
    current = records_by_name(config).get(component.name)
    if current is not None and process_of(current) is not None:
        say(f"  {component.name:<11} already running  pid {current.pid:<7} port {current.port}")
        return current, False
    record = _start_one(config, component, env if env is not None else product_env(config))
    say(f"  {component.name:<11} started          pid {record.pid:<7} port {record.port}")
    return record, True


def bring_up(config: StackConfig, say: Say) -> list[PidRecord]:
    """Start every component not already running, in order, each waited on until healthy."""
    for sub in (config.logs_dir, config.pids_dir, config.keys_dir, config.data_dir):
        sub.mkdir(parents=True, exist_ok=True)
    config.save()
    config.ensure_secrets_key()
    config.save_settings_file()
    records: list[PidRecord] = []
    for component in all_components(config):
        if component.kind == "nginx":
            render_nginx(config)
        elif component.kind == "prometheus":
            render_prometheus(config)
        record, _ = ensure_component(config, component, say)
        records.append(record)
    _stop_surplus_workers(config, say)
    return records


def _stop_surplus_workers(config: StackConfig, say: Say) -> None:
    wanted = {f"worker-{i + 1}" for i in range(config.workers)}
    for record in load_records(config.pids_dir):
        if record.name.startswith("worker-") and record.name not in wanted:
            say(f"  {record.name:<11} {stop(record, config.pids_dir)} (scaled down)")


def scale_workers(config: StackConfig, workers: int, say: Say) -> StackConfig:
    """Start or stop workers so that exactly ``workers`` run; Prometheus is told of the change."""
    if workers < 1:
        raise StackError("--workers must be >= 1")
    new = config.with_workers(workers)
    new.save()
    env = product_env(new)
    for index in range(1, workers + 1):
        ensure_component(new, worker_component(new, index), say, env=env)
    _stop_surplus_workers(new, say)
    if workers != config.workers:
        render_prometheus(new)
        prom = records_by_name(new).get("prometheus")
        proc = process_of(prom) if prom else None
        if proc is not None:
            proc.send_signal(signal.SIGHUP)  # reload the scrape targets
    return new


def restart_worker(config: StackConfig, name: str, say: Say) -> PidRecord:
    """Start ``worker-<n>`` again after it died (the bench kills workers on purpose)."""
    index = int(name.removeprefix("worker-"))
    record, _ = ensure_component(config, worker_component(config, index), say)
    return record


def _stop_key(record: PidRecord) -> tuple[int, str]:
    kind = record.name.split("-")[0]
    order = START_ORDER.index(kind) if kind in START_ORDER else len(START_ORDER)
    return (-order, record.name)


def bring_down(config: StackConfig, say: Say) -> int:
    """Stop exactly the recorded processes, last started first; how many were running."""
    stopped = 0
    for record in sorted(load_records(config.pids_dir), key=_stop_key):
        outcome = stop(record, config.pids_dir)
        if outcome != "not running":
            stopped += 1
        say(f"  {record.name:<11} {outcome:<12} pid {record.pid}")
    return stopped


def create_api_key(config: StackConfig, app: str) -> str:
    """``notifier apikey create --app APP`` against the stack's store; the key, alone."""
    result = subprocess.run(
        notifier_argv("apikey", "create", "--app", app),
        capture_output=True,
        text=True,
        env=product_env(config),
        timeout=60,
        check=False,
    )
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        raise StackError(f"notifier apikey create failed: {result.stderr.strip()[-500:]}")
    return lines[-1]


def ensure_api_key(config: StackConfig) -> tuple[str, bool]:
    """The stack's API key (created once, kept in the run folder, mode 0600); True if new."""
    existing = config.api_key()
    if existing:
        return existing, False
    key = create_api_key(config, "stack")
    fd = os.open(config.api_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, True
