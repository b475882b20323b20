"""``notifier app credentials set|show|delete|rotate-key|new-secrets-key`` and
``notifier adminkey create|list|revoke``: their arguments and what they do.

notifier/cli.py only dispatches here. Output never holds key material: ``show`` prints
fingerprints and ids, and every error names the fault (a field, a file, a variable), never
the value. Remarks go to stderr; what a script takes (a key, ``--json``) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from notifier.settings import Settings

_T = TypeVar("_T")


def add_app_parser(sub: Any) -> None:
    """``notifier app credentials ...`` on the main parser's subcommands."""
    app = sub.add_parser("app", help="manage apps' provider credentials (docs/credentials.md)")
    app_sub = app.add_subparsers(dest="app_command", required=True)
    creds = app_sub.add_parser("credentials", help="an app's FCM and APNs credentials")
    action = creds.add_subparsers(dest="action", required=True)

    put = action.add_parser("set", help="store (or replace) an app's FCM or APNs credential")
    put.add_argument("--app", required=True)
    put.add_argument("--fcm-service-account", type=Path, metavar="FILE")
    put.add_argument("--apns-key-file", type=Path, metavar="FILE", help="the .p8 key")
    put.add_argument("--apns-key-id", metavar="KEY_ID")
    put.add_argument("--apns-team-id", metavar="TEAM_ID")
    put.add_argument(
        "--apns-topic", action="append", default=[], metavar="TOPIC", help="repeatable"
    )

    show = action.add_parser("show", help="fingerprints, key ids, topics (never the keys)")
    show.add_argument("--app", required=True)
    show.add_argument("--json", action="store_true", help="one JSON object per line")

    delete = action.add_parser("delete", help="delete one credential of an app")
    delete.add_argument("--app", required=True)
    delete.add_argument("--provider", required=True, choices=["fcm", "apns"])

    action.add_parser(
        "rotate-key",
        help="re-encrypt every credential under NOTIFIER_SECRETS_KEY "
        "(the old key in NOTIFIER_SECRETS_KEY_PREVIOUS)",
    )
    action.add_parser("new-secrets-key", help="print a new random NOTIFIER_SECRETS_KEY")


def add_adminkey_parser(sub: Any) -> None:
    admin = sub.add_parser("adminkey", help="manage admin keys (the admin API's bearer keys)")
    action = admin.add_subparsers(dest="action", required=True)
    action.add_parser("create", help="create an admin key; prints it once")
    action.add_parser("list", help="list admin keys: id, created (never the key)")
    revoke = action.add_parser("revoke", help="delete an admin key by its id")
    revoke.add_argument("id", help="the key's id, as `adminkey list` shows it")


class _Refused(Exception):
    """A command refused: one line for stderr, and the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def run_app(settings: Settings, args: argparse.Namespace) -> int:
    """``notifier app credentials ACTION``; the exit code."""
    from notifier.credentials.model import CredentialError
    from notifier.credentials.sealing import SealingError, new_key
    from notifier.credentials.vault import NoSecretsKey

    if args.action == "new-secrets-key":
        print(new_key())
        return 0
    try:
        return _APP_ACTIONS[args.action](settings, args)
    except CredentialError as exc:
        return _refuse(f"{exc}")
    except NoSecretsKey as exc:
        return _refuse(str(exc))
    except SealingError as exc:
        return _refuse(str(exc), 1)
    except _Refused as exc:
        return _refuse(str(exc), exc.code)


def _refuse(message: str, code: int = 2) -> int:
    print(f"notifier: {message}", file=sys.stderr)
    return code


def _with_store(settings: Settings, use: Callable[[Any], Awaitable[_T]]) -> _T:
    async def run() -> _T:
        from notifier.store import open_store

        store = await open_store(settings)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Refused(
            f"{option}: cannot read {path} ({exc.strerror or type(exc).__name__})"
        ) from None


def _credential_from_args(args: argparse.Namespace) -> Any:
    from notifier.credentials.model import ApnsCredential, CredentialError, FcmCredential

    apns_given = [args.apns_key_file, args.apns_key_id, args.apns_team_id, args.apns_topic]
    if (args.fcm_service_account is None) == (not any(apns_given)):
        raise _Refused("give either --fcm-service-account FILE or the --apns-* options")
    if args.fcm_service_account is not None:
        raw = _read(args.fcm_service_account, "--fcm-service-account")
        try:
            return FcmCredential.parse(raw)
        except CredentialError as exc:
            raise _Refused(f"--fcm-service-account {args.fcm_service_account}: {exc}") from None
    for option, value in (
        ("--apns-key-file", args.apns_key_file),
        ("--apns-key-id", args.apns_key_id),
        ("--apns-team-id", args.apns_team_id),
        ("--apns-topic", args.apns_topic),
    ):
        if not value:
            raise _Refused(f"{option} is required with the other --apns-* options")
    pem = _read(args.apns_key_file, "--apns-key-file").decode("utf-8", "replace")
    try:
        return ApnsCredential.parse(pem, args.apns_key_id, args.apns_team_id, args.apns_topic)
    except CredentialError as exc:
        options = {"private_key": f"--apns-key-file {args.apns_key_file}", "topics": "--apns-topic"}
        named = options.get(exc.field, "--apns-" + exc.field.replace("_", "-"))
        raise _Refused(f"{named}: {exc.message}") from None


def _set(settings: Settings, args: argparse.Namespace) -> int:
    from notifier.credentials.vault import check_app, keyring_from, set_credential

    check_app(args.app)
    keyring = keyring_from(settings)
    credential = _credential_from_args(args)
    info = _with_store(settings, lambda s: set_credential(s, keyring, args.app, credential))
    print(
        f"stored the {info.provider.value} credential of app {info.app} "
        f"(version {info.version}, {_public_text(info.public)})"
    )
    return 0


def _public_text(public: dict[str, Any]) -> str:
    shown = {k: v for k, v in public.items() if k != "provider"}
    return ", ".join(
        f"{k} {','.join(v) if isinstance(v, list) else v}" for k, v in shown.items() if v
    )


def _show(settings: Settings, args: argparse.Namespace) -> int:
    from notifier.credentials.vault import check_app, show_credentials

    check_app(args.app)
    infos = _with_store(settings, lambda s: show_credentials(s, args.app))
    if args.json:
        for info in infos:
            print(json.dumps(info.as_dict(), sort_keys=True))
        return 0
    if not infos:
        print(f"app {args.app} has no credentials of its own: it uses the environment's")
        return 0
    for info in infos:
        print(
            f"{info.provider.value:<5} version {info.version}, updated "
            f"{info.updated_at:%Y-%m-%d %H:%M:%S} UTC, secrets key {info.secrets_key_id}"
        )
        for name, value in info.public.items():
            if name != "provider" and value:
                text = " ".join(value) if isinstance(value, list) else value
                print(f"      {name:<15}{text}")
    return 0


def _delete(settings: Settings, args: argparse.Namespace) -> int:
    from notifier.credentials.model import Provider
    from notifier.credentials.vault import check_app, delete_credential

    check_app(args.app)
    provider = Provider(args.provider)
    if not _with_store(settings, lambda s: delete_credential(s, args.app, provider)):
        raise _Refused(f"app {args.app} has no {provider.value} credential", 1)
    print(
        f"deleted the {provider.value} credential of app {args.app}; "
        "workers fall back to the environment's within seconds"
    )
    return 0


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    from notifier.credentials.vault import keyring_from, rotate_key

    keyring = keyring_from(settings)
    report = _with_store(settings, lambda s: rotate_key(s, keyring))
    print(
        f"re-encrypted {report.rotated} credential(s) under secrets key {report.key_id}; "
        f"{report.current} already were. NOTIFIER_SECRETS_KEY_PREVIOUS may now be removed."
    )
    return 0


_APP_ACTIONS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "set": _set,
    "show": _show,
    "delete": _delete,
    "rotate-key": _rotate,
}


def run_adminkey(settings: Settings, args: argparse.Namespace) -> int:
    """``notifier adminkey create|list|revoke``; the exit code."""
    from notifier import adminkeys
    from notifier.store.base import is_api_key_id

    if args.action == "create":
        key = asyncio.run(adminkeys.create_admin_key(settings))
        print(key)  # alone on its line: scripts take the key from stdout
        print(f"admin key id {adminkeys.key_id(key)} (adminkey list|revoke)", file=sys.stderr)
        return 0
    if args.action == "list":
        keys = asyncio.run(adminkeys.list_admin_keys(settings))
        print(f"{'id':<18}created (UTC)")
        for k in keys:
            print(f"{k.id:<18}{k.created_at:%Y-%m-%d %H:%M:%S}")
        return 0
    key_id = args.id.strip().lower()
    if not is_api_key_id(key_id):  # never echoed: it may be a key pasted by mistake
        return _refuse("not a key id: 16 hex characters, as `adminkey list` shows")
    if not asyncio.run(adminkeys.revoke_admin_key(settings, key_id)):
        return _refuse(f"no admin key with id {key_id} (see `adminkey list`)", 1)
    print(f"revoked admin key {key_id}")
    return 0
