"""The ``notifier`` command: one entry point that dispatches to each process and tool.

Imports are lazy so that ``notifier api`` never loads the worker's code, and a bad
setting stops the process at start with one line naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from notifier.credentials import commands as credential_commands
from notifier.settings import (
    Settings,
    SettingsError,
    load_settings,
    load_settings_beside_stack,
    redacted_url,
)

PASS_THROUGH = {"emulator", "stack", "bench", "dlq"}
# Commands an operator runs by hand: next to a local stack they use its settings file
# (notifier.settings.load_settings_beside_stack); the api and worker processes never do.
BY_HAND = {"apikey", "adminkey", "app", "prune", "dlq"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier", description="Push-notification delivery pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, required=True)

    worker = sub.add_parser("worker", help="consume, claim, push and record outcomes")
    worker.add_argument("--host", default="127.0.0.1")
    worker.add_argument("--metrics-port", type=int, required=True)
    worker.add_argument("--concurrency", type=int, default=256)

    apikey = sub.add_parser("apikey", help="manage API keys")
    apikey_sub = apikey.add_subparsers(dest="action", required=True)
    create = apikey_sub.add_parser("create", help="create a key; prints it once")
    create.add_argument("--app", required=True)
    listing = apikey_sub.add_parser("list", help="list keys: id, app, created (never the key)")
    listing.add_argument("--app", help="only this app's keys")
    revoke = apikey_sub.add_parser(
        "revoke", help="delete a key by its id; every API replica refuses it within seconds"
    )
    revoke.add_argument("id", help="the key's id, as `apikey list` shows it")

    credential_commands.add_app_parser(sub)
    credential_commands.add_adminkey_parser(sub)

    prune = sub.add_parser("prune", help="delete final notifications older than N days (retention)")
    prune.add_argument("--older-than-days", type=_int_in(1, 36500), required=True, metavar="N")
    prune.add_argument("--batch", type=_int_in(1, 1_000_000), default=5000, help="rows per round")

    sub.add_parser("dlq", help="inspect or replay the dead-letter queue (list|replay)")
    sub.add_parser("emulator", help="local FCM and APNs stand-ins with fault injection")
    sub.add_parser("stack", help="run the whole pipeline on this machine (up|down|status)")
    sub.add_parser("bench", help="end-to-end throughput, latency, duplicates and losses")
    return parser


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``, else one line saying what is wrong."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {value}")
        return value

    return parse


def _settings(*, beside_stack: bool = False) -> Settings:
    """The settings from the environment; for the commands run by hand (``beside_stack``)
    the local stack's settings file fills in when NOTIFIER_STORE_URL is unset, and says so."""
    try:
        if not beside_stack:
            return load_settings()
        settings, used = load_settings_beside_stack(Path.cwd())
    except SettingsError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if used is not None:
        print(
            f"notifier: NOTIFIER_STORE_URL is not set: using the local stack's settings from "
            f"{used} (store {redacted_url(settings.store_url)}, queue {settings.queue})",
            file=sys.stderr,
        )
    return settings


# Tooling outside the product package, run only when its extra is installed: the modules
# each command needs, and the extra that brings them. The product never imports these.
TOOLING: dict[str, tuple[str, tuple[str, ...]]] = {
    "emulator": ("emulator", ("emulator", "granian", "trustme")),
    "stack": ("tools", ("notifier_tools", "emulator", "granian", "psutil", "httpx")),
    "bench": ("tools", ("loadtest", "notifier_tools", "emulator", "granian", "psutil", "rich")),
}


def _missing_extra(command: str) -> str | None:
    """The one line to print when ``command``'s extra is not installed, else None."""
    extra, modules = TOOLING[command]
    if all(importlib.util.find_spec(name) is not None for name in modules):
        return None
    return f"notifier {command} needs the {extra} extra: pip install 'notifier[{extra}]'"


def _pass_through(command: str, rest: list[str]) -> int:
    if command in TOOLING and (missing := _missing_extra(command)) is not None:
        print(missing, file=sys.stderr)
        return 2
    # The only imports of tooling in the core (tests/test_product_only.py holds it so).
    if command == "emulator":
        from emulator import main as emulator_main

        return emulator_main(rest)
    if command == "stack":
        from notifier_tools.stack import main as stack_main

        return stack_main(rest)
    if command == "bench":
        from loadtest.bench import main as bench_main

        return bench_main(rest)
    from workers.dlq import main as dlq_main

    return dlq_main(_settings(beside_stack=True), rest)


def _apikey(settings: Settings, args: argparse.Namespace) -> int:
    """``notifier apikey create|list|revoke``: keys on stdout, remarks on stderr."""
    from notifier import apikeys
    from notifier.store.base import is_api_key_id

    if args.action == "create":
        key = asyncio.run(apikeys.create_key(settings, args.app))
        print(key)  # alone on its line: scripts take the key from stdout
        print(f"key id {apikeys.key_id(key)} (apikey list|revoke)", file=sys.stderr)
        return 0
    if args.action == "list":
        keys = asyncio.run(apikeys.list_keys(settings, args.app))
        print(f"{'id':<18}{'created (UTC)':<22}app")
        for k in keys:
            print(f"{k.id:<18}{k.created_at:%Y-%m-%d %H:%M:%S}   {k.app}")
        return 0
    key_id = args.id.strip().lower()
    if not is_api_key_id(key_id):  # never echoed: it may be a key pasted by mistake
        print("notifier: not a key id: 16 hex characters, as `apikey list` shows", file=sys.stderr)
        return 2
    app = asyncio.run(apikeys.revoke_key(settings, key_id))
    if app is None:
        print(f"notifier: no API key with id {key_id} (see `apikey list`)", file=sys.stderr)
        return 1
    print(
        f"revoked key {key_id} of app {app}; every API replica refuses it within "
        f"{apikeys.REVOCATION_SECONDS:g} s"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in PASS_THROUGH:
        return _pass_through(args_list[0], args_list[1:])
    args = _parser().parse_args(args_list)
    settings = _settings(beside_stack=args.command in BY_HAND)
    if args.command == "api":
        from api.server import serve as serve_api

        serve_api(settings, args.host, args.port)
    elif args.command == "worker":
        from workers.main import serve as serve_worker

        if args.concurrency < 1:
            print("notifier: --concurrency must be >= 1", file=sys.stderr)
            return 2
        serve_worker(settings, args.host, args.metrics_port, args.concurrency)
    elif args.command == "apikey":
        return _apikey(settings, args)
    elif args.command == "app":
        return credential_commands.run_app(settings, args)
    elif args.command == "adminkey":
        return credential_commands.run_adminkey(settings, args)
    elif args.command == "prune":
        from datetime import timedelta

        from notifier.retention import prune

        age = timedelta(days=args.older_than_days)
        deleted = asyncio.run(
            prune(
                settings,
                age,
                batch=args.batch,
                progress=lambda n: print(f"deleted {n} so far", file=sys.stderr),
            )
        )
        print(f"deleted {deleted} final notifications older than {args.older_than_days} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
