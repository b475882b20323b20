"""A raw database on the MongoDB test server, and how to tell the stand-in from mongod.

The MongoDB tests run against ``NOTIFIER_TEST_MONGODB_URL``: a real mongod, or the
MongoDB-compatible stand-in (SecantusDB). Where the stand-in departs from MongoDB's
documented behaviour, the test asserts MongoDB's behaviour and :func:`deviation` marks it
expected to fail on the stand-in only, naming the difference (a strict xfail: if the
stand-in is fixed, the test says so).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.conftest import MONGODB_URL
from tests.store.conftest import is_stand_in


@dataclass(frozen=True)
class Server:
    """The server behind the test URL, as its ``hello`` and ``buildInfo`` describe it."""

    client: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]
    stand_in: bool  # SecantusDB, whose buildInfo carries ``secantusVersion``
    standalone: bool  # no replica set name, not a mongos

    def deviation(self, request: pytest.FixtureRequest, difference: str) -> None:
        """Expect the calling test to fail on the stand-in, for ``difference``."""
        if self.stand_in:
            request.applymarker(
                pytest.mark.xfail(reason=f"SecantusDB deviation: {difference}", strict=True)
            )


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    name = f"notifier_test_{secrets.token_hex(6)}"
    hello = await client.admin.command("hello")
    build_info = await client.admin.command("buildInfo")
    standalone = "setName" not in hello and hello.get("msg") != "isdbgrid"
    yield Server(client, client[name], is_stand_in(build_info), standalone)
    await client.drop_database(name)
    await client.close()
