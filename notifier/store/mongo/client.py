"""Connecting to MongoDB: client options, the write-concern choice, and error mapping.

Durability: at connect the ``hello`` answer tells the deployment. On a replica set (``setName``
present) or a sharded cluster (mongos answers ``msg: isdbgrid``) every write uses write
concern ``majority``, so an acknowledged insert survives a failover. On a standalone server
it is ``w=1, j=True``: acknowledged once the primary's journal is on disk, the most one node
can give (a plain ``w=1`` may lose the last ~100 ms of acknowledged writes on a crash).

PyMongo's connection errors and timeouts surface as
:class:`~notifier.store.base.StoreUnavailable` (the store protocol's rule).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit

from pymongo import AsyncMongoClient, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError
from pymongo.monitoring import CommandListener

from notifier.store.base import StoreUnavailable

Document = dict[str, Any]
DEFAULT_DATABASE = "notifier"
# Defaults for the client; the same option given in the URL wins.
CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 10_000,
    "connectTimeoutMS": 10_000,
    # Client-side operation timeout, retries included; while it is set PyMongo also bounds
    # server selection with it (serverSelectionTimeoutMS counts when a URL sets timeoutMS=0).
    "timeoutMS": 10_000,
}

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def unavailable_on_network_errors() -> Iterator[None]:
    """Re-raise PyMongo's connection errors and timeouts as :class:`StoreUnavailable`."""
    try:
        yield
    except (ConnectionFailure, ExecutionTimeout, WTimeoutError) as exc:
        # ServerSelectionTimeoutError, NetworkTimeout and NotPrimaryError are ConnectionFailures.
        raise StoreUnavailable(f"MongoDB is unavailable: {type(exc).__name__}") from exc
    except PyMongoError as exc:
        if exc.timeout:  # e.g. a bulk write whose write concern timed out
            raise StoreUnavailable(f"MongoDB did not answer in time: {type(exc).__name__}") from exc
        raise


def mapped(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Decorate a store method with :func:`unavailable_on_network_errors`; a store whose
    ``closed`` is true raises :class:`StoreUnavailable` (PyMongo would raise
    ``InvalidOperation``, which also signals real misuse and so is not mapped itself)."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if args and getattr(args[0], "closed", False) is True:
            raise StoreUnavailable("the MongoDB store is closed")
        with unavailable_on_network_errors():
            return await fn(*args, **kwargs)

    return wrapper


def hosts(url: str) -> str:
    """The host part of a MongoDB URL, without credentials (for error messages)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def client_options(url: str) -> dict[str, Any]:
    """Our defaults for the options the URL does not set (URI option names are case-blind)."""
    given = {k.lower() for k in parse_qs(urlsplit(url).query)}
    options = {k: v for k, v in CLIENT_OPTIONS.items() if k.lower() not in given}
    # Datetimes come back aware, in UTC, like the rest of the code expects.
    return {**options, "tz_aware": True, "tzinfo": UTC, "appname": "notifier"}


def write_concern_for(hello: Document) -> WriteConcern:
    replicated = "setName" in hello or hello.get("msg") == "isdbgrid"
    return WriteConcern(w="majority") if replicated else WriteConcern(w=1, j=True)


async def open_database(
    url: str, *, event_listeners: Sequence[CommandListener] = ()
) -> tuple[AsyncMongoClient[Document], AsyncDatabase[Document]]:
    """A client and the URL's database (default ``notifier``) with the durable write concern."""
    try:
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url, event_listeners=list(event_listeners), **client_options(url)
        )
    except PyMongoError as exc:  # a malformed URL or option; its text may hold the URL
        raise StoreUnavailable(f"MongoDB URL rejected: {type(exc).__name__}") from None
    try:
        hello = await client.admin.command("hello")
    except PyMongoError as exc:
        await client.close()
        raise StoreUnavailable(
            f"MongoDB at {hosts(url)} is unavailable: {type(exc).__name__}"
        ) from None
    db = client.get_default_database(DEFAULT_DATABASE, write_concern=write_concern_for(hello))
    return client, db
