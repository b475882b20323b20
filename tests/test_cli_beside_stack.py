"""``notifier apikey`` (and ``dlq``, ``prune``) run in a checkout where ``notifier stack up``
ran: without NOTIFIER_STORE_URL they use the stack's settings file and say so, so a new
key is one the stack's API knows (it used to land in the default MongoDB store: 401)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.apikeys import hash_key
from notifier.settings import (
    STACK_SETTINGS_FILE,
    Settings,
    load_settings,
    load_settings_beside_stack,
    read_settings_file,
)
from notifier.store import open_store
from notifier_tools.stack.components import StackConfig, product_env
from tests.conftest import AMQP_URL, ROOT


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _notifier(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def checkout(tmp_path: Path, pg_url: str, queue_name: str) -> Path:
    """A folder where a stack on ``pg_url`` wrote its settings, as ``stack up`` does."""
    config = StackConfig(
        run_dir=str(tmp_path / ".run" / "stack"),
        store_url=pg_url,
        amqp_url=AMQP_URL,
        queue=queue_name,
    )
    config.root.mkdir(parents=True)
    config.save_settings_file()
    return tmp_path


async def _app_of(store_url: str, key: str) -> str | None:
    store = await open_store(load_settings({"NOTIFIER_STORE_URL": store_url}))
    try:
        return await store.app_for_key_hash(hash_key(key))
    finally:
        await store.close()


async def test_apikey_create_beside_a_stack_makes_a_key_of_the_stacks_store(
    checkout: Path, pg_url: str
) -> None:
    result = _notifier(checkout, _clean_env(), "apikey", "create", "--app", "beside")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert await _app_of(pg_url, key) == "beside"
    note = result.stderr.splitlines()[0]
    assert "NOTIFIER_STORE_URL is not set" in note and str(STACK_SETTINGS_FILE) in note
    assert ":notifier@" not in result.stderr  # the store's password is not printed
    listed = _notifier(checkout, _clean_env(), "apikey", "list", "--app", "beside")
    assert hash_key(key)[:16] in listed.stdout


async def test_the_environment_wins_over_the_stack_file(
    checkout: Path, fresh_pg_url: str, pg_url: str
) -> None:
    env = _clean_env(NOTIFIER_STORE_URL=fresh_pg_url)
    result = _notifier(checkout, env, "apikey", "create", "--app", "explicit")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert "stack" not in result.stderr
    assert await _app_of(fresh_pg_url, key) == "explicit"
    assert await _app_of(pg_url, key) is None


def test_without_a_stack_file_the_environment_alone_counts(tmp_path: Path) -> None:
    settings, used = load_settings_beside_stack(tmp_path, {})
    assert used is None
    assert settings == Settings()


def test_the_settings_file_is_private_and_round_trips(tmp_path: Path) -> None:
    url = "postgresql://u:p'w d&x@127.0.0.1:5432/db?a=1&b=2"
    config = StackConfig(run_dir=str(tmp_path), store_url=url, queue="q 1")
    config.save_settings_file()
    assert stat.S_IMODE(config.settings_file.stat().st_mode) == 0o600
    assert read_settings_file(config.settings_file) == {
        "NOTIFIER_STORE_URL": url,
        "NOTIFIER_AMQP_URL": config.amqp_url,
        "NOTIFIER_QUEUE": "q 1",
    }
    # It is shell syntax too: `set -a; . .run/stack/env` gives the same values.
    shell = subprocess.run(
        ["sh", "-c", f'set -a; . "{config.settings_file}"; printf %s "$NOTIFIER_STORE_URL"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == url


def test_only_an_unset_store_url_brings_the_file_in(tmp_path: Path) -> None:
    """A queue set in the environment is kept; the file fills in the rest."""
    config = StackConfig(run_dir=str(tmp_path / ".run" / "stack"), store_url="postgresql://h/db")
    config.root.mkdir(parents=True)
    config.save_settings_file()
    settings, used = load_settings_beside_stack(tmp_path, {"NOTIFIER_QUEUE": "mine"})
    assert used == tmp_path / STACK_SETTINGS_FILE
    assert (settings.store_url, settings.queue) == ("postgresql://h/db", "mine")


def test_the_stack_makes_a_secrets_key_once_for_its_processes_and_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apps of a local stack can have credentials of their own: `up` makes a secrets key
    once (owner-only), gives it to the API and workers, and writes it to the settings
    file, so `notifier app credentials set` beside the stack seals with the same key."""
    monkeypatch.delenv("NOTIFIER_SECRETS_KEY", raising=False)
    config = StackConfig(run_dir=str(tmp_path), store_url="postgresql://h/db")
    config.keys_dir.mkdir(parents=True)
    config.ensure_secrets_key()
    key = config.secrets_key()
    assert key is not None and stat.S_IMODE(config.secrets_key_file.stat().st_mode) == 0o600
    config.ensure_secrets_key()  # a second `up` keeps it: stored credentials stay readable
    assert config.secrets_key() == key
    assert product_env(config)["NOTIFIER_SECRETS_KEY"] == key
    config.save_settings_file()
    from_file = read_settings_file(config.settings_file)
    assert from_file["NOTIFIER_SECRETS_KEY"] == key
    assert load_settings(from_file).secrets_key is not None
    monkeypatch.setenv("NOTIFIER_SECRETS_KEY", "from-the-environment")  # the user's wins
    assert product_env(config)["NOTIFIER_SECRETS_KEY"] == "from-the-environment"
