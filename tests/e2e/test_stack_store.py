"""Which store ``notifier stack up`` uses: --store, --store-url, NOTIFIER_STORE_URL, the run
folder's last choice, and each store's local default (MongoDB: the stand-in on :27017)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from notifier_tools.stack.cli import _parser, _store_url
from notifier_tools.stack.components import DEFAULT_MONGODB_URL, DEFAULT_PG_URL, StackConfig
from notifier_tools.stack.processes import StackError

ATLAS = "mongodb://db.example:27017/notifier?replicaSet=rs0"
OTHER_PG = "postgresql://u:p@127.0.0.1:5433/other"


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["up", *argv])


@pytest.fixture(autouse=True)
def _no_store_url_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFIER_STORE_URL", raising=False)


def test_store_mongodb_alone_uses_the_local_stand_in() -> None:
    assert _store_url(_args("--store", "mongodb"), None) == DEFAULT_MONGODB_URL


def test_nothing_given_is_the_local_postgresql() -> None:
    assert _store_url(_args(), None) == DEFAULT_PG_URL


def test_any_mongodb_url_given_is_used() -> None:
    assert _store_url(_args("--store", "mongodb", "--store-url", ATLAS), None) == ATLAS
    assert _store_url(_args("--store-url", ATLAS), None) == ATLAS


def test_the_environment_names_the_url_of_the_store_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFIER_STORE_URL", ATLAS)
    assert _store_url(_args("--store", "mongodb"), None) == ATLAS
    assert _store_url(_args("--store", "postgresql"), None) == DEFAULT_PG_URL
    monkeypatch.setenv("NOTIFIER_STORE_URL", OTHER_PG)
    assert _store_url(_args("--store", "mongodb"), None) == DEFAULT_MONGODB_URL


def test_a_url_of_the_other_store_is_a_clear_error() -> None:
    with pytest.raises(StackError, match="--store mongodb does not match --store-url"):
        _store_url(_args("--store", "mongodb", "--store-url", OTHER_PG), None)


def test_a_second_up_keeps_the_run_folders_store_unless_told(tmp_path: Path) -> None:
    saved = StackConfig(run_dir=str(tmp_path), store_url=ATLAS)
    assert _store_url(_args(), saved) == ATLAS
    assert _store_url(_args("--store", "postgresql"), saved) == DEFAULT_PG_URL
