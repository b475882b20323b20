"""Shared fixtures: the real services (RabbitMQ, PostgreSQL, a MongoDB server) started by
scripts/services.sh.

Every test run gets its own PostgreSQL and MongoDB databases and its own RabbitMQ vhost
(deleted at the end, with every queue the run declared), and each test its own queue names,
so runs and tests never see each other's data. Nothing here mocks the broker or the store.

The store under test: every test that reaches the store through ``make_settings`` or
``store_url`` runs once per store (``store_kind``: ``postgresql``, ``mongodb``), unless it is
marked ``@pytest.mark.stores("postgresql")`` with the reason. MongoDB is the SecantusDB
stand-in that services.sh starts (docs/testing.md), or the server that
``NOTIFIER_TEST_MONGODB_URL`` names (a real mongod, say).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
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
# The stand-in services.sh starts (its port follows NOTIFIER_TEST_MONGODB_PORT, as there).
STANDIN_MONGODB_PORT = os.environ.get("NOTIFIER_TEST_MONGODB_PORT", "27017")
STANDIN_MONGODB_URL = f"mongodb://127.0.0.1:{STANDIN_MONGODB_PORT}/"
MONGODB_URL = os.environ.get("NOTIFIER_TEST_MONGODB_URL") or STANDIN_MONGODB_URL
STORE_KINDS = ("postgresql", "mongodb")
# Sizes of the end-to-end tests on the MongoDB stand-in, as a fraction of theirs on
# PostgreSQL or a real mongod: SecantusDB is a Python server (one core) and its writes cost
# milliseconds where mongod's cost tens of microseconds (docs/testing.md has the figures).
# Only how many notifications a test sends shrinks, never what it asserts about them.
STANDIN_SCALE = 0.25
# The submission rate (notifications/s) of a bench run on the stand-in, under what it
# sustains here: a find of 500 ids by _id takes it ~0.35 s, an update of them ~0.6 s, so a
# notification (insert, publish mark, claim, outcome) costs it ~5 ms. Faster, its queue of
# commands outgrows the store timeout, and a test would measure an outage, not the pipeline.
STANDIN_RATE = 100


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Make sure RabbitMQ, PostgreSQL and the MongoDB stand-in answer (start them if not; the
    stand-in only when no other MongoDB server is named); create the test vhost."""
    status = subprocess.run([SERVICES, "status"], capture_output=True, text=True, check=False)
    down = [line.split()[0] for line in status.stdout.splitlines() if line.split()[1:2] == ["down"]]
    if "NOTIFIER_TEST_MONGODB_URL" in os.environ and "mongodb" in down:
        down.remove("mongodb")
    if down or status.returncode != 0:
        subprocess.run([SERVICES, "up"], check=True)
    if TEST_VHOST is not None:
        subprocess.run([SERVICES, "vhost-add", TEST_VHOST], check=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if TEST_VHOST is not None:
        subprocess.run([SERVICES, "vhost-delete", TEST_VHOST], check=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that needs ``store_kind`` on every store its ``stores`` marker allows."""
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = marker.args if marker is not None else STORE_KINDS
        metafunc.parametrize("store_kind", kinds, indirect=True, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move tests marked ``disruptive`` (they stop a shared service: RabbitMQ, PostgreSQL) to
    the end of the run, keeping the order within each part.

    trylast: pytest's own hook groups the tests by session-scoped parameters (each store's
    tests together); ours runs after it, so a restart never lands between two tests that
    share a connection, whatever the files are called."""
    disruptive = [item for item in items if item.get_closest_marker("disruptive") is not None]
    if disruptive:
        rest = [item for item in items if item.get_closest_marker("disruptive") is None]
        items[:] = rest + disruptive


_vhost_emptied = False


@pytest.fixture(autouse=True)
def _empty_vhost_before_a_restart(request: pytest.FixtureRequest) -> None:
    """Before the first test that stops a shared service (they run last), empty this
    session's vhost. A RabbitMQ ``start_app`` recovers every quorum queue on the node, and
    the thousands the earlier tests left (each test's work queue and both lanes' dead-letter
    queues) made it take over a minute in CI, so that the tests after it could not connect.
    Autouse: it runs before the test's own fixtures declare its queues."""
    global _vhost_emptied
    if _vhost_emptied or TEST_VHOST is None:
        return
    if request.node.get_closest_marker("disruptive") is None:
        return
    _vhost_emptied = True
    subprocess.run([SERVICES, "vhost-delete", TEST_VHOST], check=True)
    subprocess.run([SERVICES, "vhost-add", TEST_VHOST], check=True)


@pytest.fixture(scope="session")
def services() -> None:
    """RabbitMQ, PostgreSQL and MongoDB answer (ensured at session start)."""


@pytest.fixture(scope="session")
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store under test, ``postgresql`` or ``mongodb`` (set by pytest_generate_tests)."""
    return str(getattr(request, "param", "postgresql"))


@pytest.fixture(scope="session")
def on_standin(store_kind: str) -> bool:
    """Whether the store under test is the MongoDB stand-in (SecantusDB), asked of the server:
    its buildInfo carries ``secantusVersion``."""
    if store_kind != "mongodb":
        return False
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(MONGODB_URL, serverSelectionTimeoutMS=10_000)
    try:
        return "secantusVersion" in client.admin.command("buildInfo")
    finally:
        client.close()


@pytest.fixture(scope="session")
def sized(on_standin: bool) -> Callable[[int], int]:
    """``sized(n)``: how many notifications a test sends; n, or n x STANDIN_SCALE on the
    stand-in (at least 1)."""

    def size(n: int) -> int:
        return max(1, round(n * STANDIN_SCALE)) if on_standin else n

    return size


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


def mongodb_url_for(database: str) -> str:
    """``MONGODB_URL`` with its database set to ``database``."""
    return _with_database(MONGODB_URL, database)


async def drop_mongodb_database(url: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        await client.drop_database(urlsplit(url).path.lstrip("/"))
    finally:
        await client.close()


@asynccontextmanager
async def own_database(kind: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on the store ``kind``, dropped on leaving. MongoDB
    makes a database on the first write, so there only the name is new."""
    if kind == "postgresql":
        name = await _create_database()
        try:
            yield _with_database(PG_ADMIN_URL, name)
        finally:
            await _drop_database(name)
    else:
        url = mongodb_url_for(f"notifier_test_{os.getpid()}_{secrets.token_hex(4)}")
        try:
            yield url
        finally:
            await drop_mongodb_database(url)


@pytest.fixture(scope="session")
async def pg_url(services: None) -> AsyncIterator[str]:
    """A PostgreSQL database of this test session's own (dropped at the end)."""
    async with own_database("postgresql") as url:
        yield url


@pytest.fixture
async def fresh_pg_url(services: None) -> AsyncIterator[str]:
    """An empty PostgreSQL database for one test."""
    async with own_database("postgresql") as url:
        yield url


@pytest.fixture(scope="session")
async def mongodb_url(services: None) -> AsyncIterator[str]:
    """A MongoDB database of this test session's own (dropped at the end)."""
    async with own_database("mongodb") as url:
        yield url


@pytest.fixture
async def fresh_mongodb_url(services: None) -> AsyncIterator[str]:
    """An empty MongoDB database for one test (dropped after it)."""
    async with own_database("mongodb") as url:
        yield url


@pytest.fixture(scope="session")
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """A database of this test session's own on the store under test."""
    return str(request.getfixturevalue("pg_url" if store_kind == "postgresql" else "mongodb_url"))


@pytest.fixture
def fresh_store_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """An empty database for one test on the store under test."""
    fixture = "fresh_pg_url" if store_kind == "postgresql" else "fresh_mongodb_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def queue_name() -> str:
    """A queue name of this test's own."""
    return f"test.{os.getpid()}.{secrets.token_hex(4)}"


@pytest.fixture
def make_settings(store_url: str, queue_name: str) -> Callable[..., Settings]:
    """Settings for this test: its own queue, the session's database on the store under test;
    overrides by keyword."""

    def make(**overrides: Any) -> Settings:
        env = {
            "NOTIFIER_STORE_URL": store_url,
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
