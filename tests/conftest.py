"""Shared fixtures: the real services (RabbitMQ, PostgreSQL) started by scripts/services.sh.

Every test run gets its own PostgreSQL databases and its own RabbitMQ vhost (deleted at the
end, with every queue the run declared), and each test its own queue names, so runs and
tests never see each other's data. Nothing here mocks the broker or the store.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from notifier.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "NOTIFIER_TEST_POSTGRES_URL", "postgresql://notifier:notifier@127.0.0.1:5432/notifier"
)
SERVICES = str(ROOT / "scripts/services.sh")
# A vhost of this session's own, unless the caller points the tests at a broker of theirs.
TEST_VHOST = (
    None
    if "NOTIFIER_TEST_AMQP_URL" in os.environ
    else (f"notifier-test-{os.getpid()}-{secrets.token_hex(3)}")
)
AMQP_URL = os.environ.get(
    "NOTIFIER_TEST_AMQP_URL", f"amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}"
)
MONGODB_URL = os.environ.get("NOTIFIER_TEST_MONGODB_URL")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Make sure RabbitMQ and PostgreSQL answer (start them if not); create the test vhost."""
    status = subprocess.run([SERVICES, "status"], capture_output=True, text=True, check=False)
    if "down" in status.stdout:
        subprocess.run([SERVICES, "up"], check=True)
    if TEST_VHOST is not None:
        subprocess.run([SERVICES, "vhost-add", TEST_VHOST], check=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if TEST_VHOST is not None:
        subprocess.run([SERVICES, "vhost-delete", TEST_VHOST], check=False)


@pytest.fixture(scope="session")
def services() -> None:
    """RabbitMQ and PostgreSQL answer (ensured at session start)."""


async def _create_database() -> str:
    name = f"notifier_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def pg_url(services: None) -> AsyncIterator[str]:
    """A PostgreSQL database of this test session's own (dropped at the end)."""
    name = await _create_database()
    yield _with_database(PG_ADMIN_URL, name)
    await _drop_database(name)


@pytest.fixture
async def fresh_pg_url(services: None) -> AsyncIterator[str]:
    """An empty PostgreSQL database for one test."""
    name = await _create_database()
    yield _with_database(PG_ADMIN_URL, name)
    await _drop_database(name)


@pytest.fixture
def queue_name() -> str:
    """A queue name of this test's own."""
    return f"test.{os.getpid()}.{secrets.token_hex(4)}"


@pytest.fixture
def make_settings(pg_url: str, queue_name: str) -> Callable[..., Settings]:
    """Settings for this test: its own queue, the session's database; overrides by keyword."""

    def make(**overrides: Any) -> Settings:
        env = {
            "NOTIFIER_STORE_URL": pg_url,
            "NOTIFIER_AMQP_URL": AMQP_URL,
            "NOTIFIER_QUEUE": queue_name,
        }
        return load_settings(env, **overrides)

    return make


@pytest.fixture(scope="session")
def repo_root() -> Iterator[Path]:
    yield ROOT


@pytest.fixture(scope="session")
async def emulator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """The FCM + APNs emulator (a subprocess) for this test session: an EmulatorHandle.

    ``.endpoint``, ``.ca_file``, ``.env`` (the NOTIFIER_* provider settings), ``.control``
    (EmulatorControl: faults, auth switches, delivery counts), ``.pid``.
    """
    from emulator.testing import run_emulator

    async with run_emulator(tmp_path_factory.mktemp("emulator-keys")) as handle:
        yield handle
