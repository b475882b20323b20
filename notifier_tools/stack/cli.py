"""``notifier stack up|down|status``: the whole pipeline on this machine, without Docker."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from notifier_tools.procs import check_health
from notifier_tools.stack.components import (
    DEFAULT_AMQP_URL,
    DEFAULT_MONGODB_URL,
    DEFAULT_PG_URL,
    Ports,
    StackConfig,
)
from notifier_tools.stack.lifecycle import (
    bring_down,
    bring_up,
    ensure_api_key,
    records_by_name,
    run_services,
    scale_workers,
)
from notifier_tools.stack.processes import StackError, process_of

DEFAULT_RUN_DIR = ".run/stack"
_PORTS = Ports()


def _say(line: str) -> None:
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier stack",
        description="Run the whole pipeline on 127.0.0.1: services, emulator, 2 API replicas "
        "behind nginx, N workers, Prometheus. PIDs, logs and data go to the run folder.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start what is not running, then send a few notifications")
    up.add_argument("--workers", type=int, help="worker processes (default 2)")
    up.add_argument(
        "--store",
        choices=("postgresql", "mongodb"),
        default=None,
        help="postgresql (default: PostgreSQL on :5432) or mongodb (default: the "
        "MongoDB-compatible stand-in that scripts/services.sh starts on :27017)",
    )
    up.add_argument("--store-url", help="the store's URL, postgresql://... or mongodb://...")
    up.add_argument("--queue", help="RabbitMQ work queue (default notifications)")
    up.add_argument("--concurrency", type=int, help="deliveries in flight per worker (256)")
    up.add_argument("--lock-seconds", type=int, help="claim lock expiry (default 30)")
    up.add_argument("--nginx-port", type=int, help=f"default {_PORTS.nginx}")
    up.add_argument("--api-port", type=int, help=f"first API replica ({_PORTS.api_base})")
    up.add_argument("--worker-port", type=int, help=f"first worker ({_PORTS.worker_base})")
    up.add_argument("--emulator-port", type=int, help=f"default {_PORTS.emulator}")
    up.add_argument("--prometheus-port", type=int, help=f"default {_PORTS.prometheus}")
    up.add_argument("--skip-services", action="store_true", help="do not run services.sh")
    up.add_argument("--no-smoke", action="store_true", help="skip the end-to-end notifications")
    for name in ("down", "status"):
        sub.add_parser(name, help=f"{name} the stack of the run folder")
    for action in sub.choices.values():
        action.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="default .run/stack")
    return parser


def _store_kind(url: str) -> str:
    """``postgresql`` or ``mongodb`` by the URL's scheme, as the settings read it."""
    return "postgresql" if url.startswith(("postgresql:", "postgres:")) else "mongodb"


def _store_url(args: argparse.Namespace, saved: StackConfig | None) -> str:
    """``--store-url``; else (no ``--store``) the run folder's last choice; else
    ``NOTIFIER_STORE_URL`` if it names the store asked for; else that store's local default."""
    if args.store_url:
        url = str(args.store_url)
        if args.store is not None and _store_kind(url) != args.store:
            kind = _store_kind(url)
            raise StackError(f"--store {args.store} does not match --store-url (a {kind} URL)")
        return url
    if args.store is None and saved is not None:
        return saved.store_url
    wanted = args.store or "postgresql"
    env_url = os.environ.get("NOTIFIER_STORE_URL", "")
    if env_url and _store_kind(env_url) == wanted:
        return env_url
    return DEFAULT_MONGODB_URL if wanted == "mongodb" else DEFAULT_PG_URL


def _config_from_args(
    args: argparse.Namespace, run_dir: Path, saved: StackConfig | None
) -> StackConfig:
    """Flags given now win; otherwise what the run folder's last ``up`` chose; else defaults."""
    base = saved or StackConfig(run_dir=str(run_dir), store_url=DEFAULT_PG_URL)

    def pick(value: int | str | None, fallback: Any) -> Any:
        return fallback if value is None else value

    ports = Ports(
        nginx=pick(args.nginx_port, base.ports.nginx),
        api_base=pick(args.api_port, base.ports.api_base),
        worker_base=pick(args.worker_port, base.ports.worker_base),
        emulator=pick(args.emulator_port, base.ports.emulator),
        prometheus=pick(args.prometheus_port, base.ports.prometheus),
    )
    return StackConfig(
        run_dir=str(run_dir),
        store_url=_store_url(args, saved),
        amqp_url=os.environ.get("NOTIFIER_AMQP_URL") or base.amqp_url or DEFAULT_AMQP_URL,
        queue=pick(args.queue, base.queue),
        workers=pick(args.workers, base.workers),
        concurrency=pick(args.concurrency, base.concurrency),
        lock_seconds=pick(args.lock_seconds, base.lock_seconds),
        ports=ports,
    )


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    saved = StackConfig.load(run_dir)
    if saved is not None and any(process_of(r) for r in records_by_name(saved).values()):
        _say(f"stack already (partly) running from {run_dir}; keeping its settings")
        config = saved
    else:
        config = _config_from_args(args, run_dir, saved)
    if not args.skip_services:
        run_services(_say)
    _say(f"stack: {run_dir} (store {config.store_url.split('@')[-1]}, queue {config.queue})")
    bring_up(config, _say)
    if args.workers is not None and args.workers != config.workers:
        config = scale_workers(config, args.workers, _say)
    key, new = ensure_api_key(config)
    if new:
        _say(f"\nAPI key (printed once; also in {config.api_key_file}):\n{key}\n")
    else:
        _say(f"API key: in {config.api_key_file}")
    if not args.no_smoke:
        from notifier_tools.stack.smoke import run_smoke

        run_smoke(config, key, _say)
    _print_where_to_look(config)
    return 0


def _print_where_to_look(config: StackConfig) -> None:
    _say(
        f"""
Where to look:
  API (through nginx)  {config.base_url}   (replicas {", ".join(map(str, config.api_ports()))})
  Prometheus           {config.prometheus_url}
  worker metrics       http://127.0.0.1:{config.ports.worker_base}/metrics (and /stats)
  emulator (FCM, APNs) {config.emulator_url}   CA {config.ca_file}
  logs                 {config.logs_dir}/<component>.log
  status / stop        notifier stack status|down --run-dir {config.run_dir}

More API keys ({_settings_hint(config)}):
  notifier apikey create --app NAME        notifier apikey list|revoke

Send one yourself:
  curl -s -X POST {config.base_url}/v1/notifications \\
    -H "Authorization: Bearer $(cat {config.api_key_file})" -H 'Content-Type: application/json' \\
    -d '{{"to": {{"platform": "fcm", "token": "my-device-token"}}, "title": "Hi", "body": "there"}}'
  curl -s {config.base_url}/v1/notifications/<id> \\
    -H "Authorization: Bearer $(cat {config.api_key_file})"
"""
    )


def _settings_hint(config: StackConfig) -> str:
    """How ``notifier apikey`` finds this stack's store: by itself in this folder, when the
    run folder is the default one; else by sourcing the settings file."""
    from notifier.settings import STACK_SETTINGS_FILE

    if config.settings_file == (Path.cwd() / STACK_SETTINGS_FILE).resolve():
        return f"run in {Path.cwd()}, they use the stack's settings from {STACK_SETTINGS_FILE}"
    return f"first: set -a; . {config.settings_file}; set +a"


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    config = StackConfig.load(run_dir) or StackConfig(run_dir=str(run_dir), store_url="")
    _say(f"stack down: {run_dir}")
    stopped = bring_down(config, _say)
    _say(f"{stopped} process(es) stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    config = StackConfig.load(run_dir)
    if config is None:
        _say(f"no stack in {run_dir} (run `notifier stack up`)")
        return 1
    records = records_by_name(config)
    from notifier_tools.stack.components import all_components

    names = [c.name for c in all_components(config)]
    names += sorted(set(records) - set(names))
    _say(f"{'component':<12}{'pid':<9}{'port':<7}{'process':<10}health")
    unhealthy = 0
    for name in names:
        record = records.get(name)
        if record is None:
            _say(f"{name:<12}{'-':<9}{'-':<7}{'stopped':<10}-")
            unhealthy += 1
            continue
        alive = process_of(record) is not None
        healthy = alive and check_health(record.health_url, ca_file=record.ca_file, timeout=1.0)
        unhealthy += not healthy
        state = "running" if alive else "gone"
        health = "ok" if healthy else "failing"
        _say(f"{name:<12}{record.pid:<9}{record.port:<7}{state:<10}{health}  {record.health_url}")
    return 0 if unhealthy == 0 else 1


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    try:
        return handlers[args.action](args)
    except StackError as exc:
        print(f"notifier stack: {exc}", file=sys.stderr)
        if args.action == "up":
            print(
                f"(what did start keeps running: `notifier stack status|down "
                f"--run-dir {args.run_dir}`; logs in {args.run_dir}/logs)",
                file=sys.stderr,
            )
        return 1
    except KeyboardInterrupt:
        print("notifier stack: interrupted (`notifier stack down` stops what started)")
        return 130
