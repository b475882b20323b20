"""``notifier app credentials ...`` and ``notifier adminkey ...`` as an operator runs them:
real processes on each real store. Output holds fingerprints and ids, never key material,
errors included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.credentials.sealing import new_key
from tests.conftest import AMQP_URL, ROOT
from tests.credentials.keys import apns_pem, secret_parts, service_account_bytes

pytestmark = pytest.mark.slow


class Cli:
    def __init__(self, store_url: str, cwd: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
        self.env.update(
            NOTIFIER_STORE_URL=store_url, NOTIFIER_AMQP_URL=AMQP_URL, PYTHONPATH=str(ROOT)
        )
        self.cwd = cwd

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "notifier", *args],
            env={**self.env, **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def cli(fresh_store_url: str, tmp_path: Path) -> Cli:
    return Cli(fresh_store_url, tmp_path)


def _files(tmp_path: Path) -> tuple[Path, Path, str]:
    pem = apns_pem()
    p8 = tmp_path / "AuthKey.p8"
    p8.write_text(pem)
    sa = tmp_path / "sa.json"
    sa.write_bytes(service_account_bytes("proj-cli"))
    return p8, sa, pem


def _no_secret(result: subprocess.CompletedProcess[str], *secrets_: str) -> None:
    out = result.stdout + result.stderr
    for secret in secrets_:
        for part in secret_parts(secret) if "PRIVATE KEY" in secret else [secret]:
            assert part not in out, "secret material in the command's output"


def _apns_args(p8: Path, *topics: str) -> list[str]:
    args = [
        "--apns-key-file",
        str(p8),
        "--apns-key-id",
        "ABC123DEFG",
        "--apns-team-id",
        "TEAM123456",
    ]
    for topic in topics:
        args += ["--apns-topic", topic]
    return args


def test_set_show_delete(cli: Cli, tmp_path: Path) -> None:
    key = new_key()
    p8, sa, pem = _files(tmp_path)
    set_apns = cli(
        "app",
        "credentials",
        "set",
        "--app",
        "shop",
        *_apns_args(p8, "com.shop", "com.shop.voip"),
        NOTIFIER_SECRETS_KEY=key,
    )
    assert set_apns.returncode == 0, set_apns.stderr
    set_fcm = cli(
        "app",
        "credentials",
        "set",
        "--app",
        "shop",
        "--fcm-service-account",
        str(sa),
        NOTIFIER_SECRETS_KEY=key,
    )
    assert set_fcm.returncode == 0, set_fcm.stderr
    show = cli("app", "credentials", "show", "--app", "shop")  # needs no secrets key
    assert show.returncode == 0, show.stderr
    for expected in (
        "apns",
        "fcm",
        "ABC123DEFG",
        "TEAM123456",
        "com.shop.voip",
        "proj-cli",
        "SHA256:",
    ):
        assert expected in show.stdout
    shown = [
        json.loads(line)
        for line in cli("app", "credentials", "show", "--app", "shop", "--json").stdout.splitlines()
    ]
    assert [s["provider"] for s in shown] == ["apns", "fcm"]
    assert all(s["version"] == 1 and s["fingerprint"].startswith("SHA256:") for s in shown)
    for result in (set_apns, set_fcm, show):
        _no_secret(result, pem, key, json.loads(sa.read_bytes())["private_key"])
    deleted = cli("app", "credentials", "delete", "--app", "shop", "--provider", "apns")
    assert deleted.returncode == 0, deleted.stderr
    again = cli("app", "credentials", "delete", "--app", "shop", "--provider", "apns")
    assert again.returncode == 1 and "no apns credential" in again.stderr
    after = cli("app", "credentials", "show", "--app", "shop", "--json")
    assert [json.loads(line)["provider"] for line in after.stdout.splitlines()] == ["fcm"]


def test_rotate_key(cli: Cli, tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    p8, sa, pem = _files(tmp_path)
    assert (
        cli(
            "app",
            "credentials",
            "set",
            "--app",
            "a",
            *_apns_args(p8, "com.a"),
            NOTIFIER_SECRETS_KEY=old,
        ).returncode
        == 0
    )
    assert (
        cli(
            "app",
            "credentials",
            "set",
            "--app",
            "b",
            "--fcm-service-account",
            str(sa),
            NOTIFIER_SECRETS_KEY=old,
        ).returncode
        == 0
    )
    # the new key alone cannot open what the old one sealed: refused, named, nothing leaked
    refused = cli("app", "credentials", "rotate-key", NOTIFIER_SECRETS_KEY=new)
    assert refused.returncode == 1 and "NOTIFIER_SECRETS_KEY_PREVIOUS" in refused.stderr
    _no_secret(refused, old, new, pem)
    rotated = cli(
        "app",
        "credentials",
        "rotate-key",
        NOTIFIER_SECRETS_KEY=new,
        NOTIFIER_SECRETS_KEY_PREVIOUS=old,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2 credential(s)" in rotated.stdout
    _no_secret(rotated, old, new, pem)
    shown = cli("app", "credentials", "show", "--app", "a", "--json").stdout
    (record,) = [json.loads(line) for line in shown.splitlines()]
    # now the new key alone does: a second rotation finds nothing to do
    again = cli("app", "credentials", "rotate-key", NOTIFIER_SECRETS_KEY=new)
    assert again.returncode == 0 and "re-encrypted 0" in again.stdout
    assert record["secrets_key_id"] in rotated.stdout


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            "-----BEGIN PRIVATE KEY-----\n"
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSECRETSECRET"
            "\n-----END PRIVATE KEY-----\n",
            "SECRETSECRET",
        ),
        ("just some text that is not a key: hunter2", "hunter2"),
    ],
)
def test_a_malformed_key_file_is_refused_without_echoing_it(
    cli: Cli, tmp_path: Path, content: str, needle: str
) -> None:
    p8 = tmp_path / "bad.p8"
    p8.write_text(content)
    key = new_key()
    result = cli(
        "app",
        "credentials",
        "set",
        "--app",
        "a",
        *_apns_args(p8, "com.a"),
        NOTIFIER_SECRETS_KEY=key,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"notifier: --apns-key-file {p8}: ") and "PEM" in line
    _no_secret(result, needle, key)
    shown = cli("app", "credentials", "show", "--app", "a", "--json")
    assert shown.stdout == ""


def test_a_bad_secrets_key_stops_the_command_naming_the_variable(cli: Cli, tmp_path: Path) -> None:
    p8, _, pem = _files(tmp_path)
    bad = "c2VjcmV0LWJ1dC10b28tc2hvcnQ="  # base64 of 24 bytes
    result = cli(
        "app",
        "credentials",
        "set",
        "--app",
        "a",
        *_apns_args(p8, "com.a"),
        NOTIFIER_SECRETS_KEY=bad,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("notifier: NOTIFIER_SECRETS_KEY: ")
    _no_secret(result, bad, pem)
    missing = cli("app", "credentials", "set", "--app", "a", *_apns_args(p8, "com.a"))
    assert missing.returncode == 2 and "NOTIFIER_SECRETS_KEY" in missing.stderr


def test_the_api_refuses_to_start_with_a_bad_secrets_key(cli: Cli) -> None:
    bad = "not base64 at all, but a secret"
    result = cli("api", "--port", "1", NOTIFIER_SECRETS_KEY=bad)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("notifier: NOTIFIER_SECRETS_KEY: ") and bad not in line


def test_adminkey_create_list_revoke(cli: Cli) -> None:
    created = cli("adminkey", "create")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("na_")
    listing = cli("adminkey", "list")
    assert key not in listing.stdout
    key_id = created.stderr.split("admin key id ")[1].split()[0]
    assert key_id in listing.stdout
    assert key_id not in cli("apikey", "list").stdout  # apart from app keys
    assert cli("adminkey", "revoke", key_id).returncode == 0
    assert key_id not in cli("adminkey", "list").stdout
    assert cli("adminkey", "revoke", key_id).returncode == 1
