"""The asyncpg connection pool of the PostgreSQL store: codecs, reset, and error mapping.

Every way of "the server cannot be reached or did not answer in time" becomes
:class:`~notifier.store.base.StoreUnavailable`; bad input and bugs stay what they are.
"""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from notifier.settings import _redact as redact_url
from notifier.store.base import StoreUnavailable

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
COMMAND_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0

# What "the store is unreachable or did not answer in time" looks like from asyncpg.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # pool closed or closing, connection lost mid-query
    asyncpg.InternalClientError,  # the server hung up while a query was starting
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,  # admin shutdown, crash recovery
    asyncpg.QueryCanceledError,  # statement timeout
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Decode jsonb with orjson (binary format: a version byte, then the JSON text)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]),
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool as it is.

    asyncpg's default reset runs one more round trip per query (advisory unlock, ``RESET
    ALL``...) to undo session state; this store never leaves any (no ``SET``, ``LISTEN`` or
    session advisory lock), and transactions end with their ``async with`` block.
    """


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server is unreachable, gone or too slow (not bad input)."""
    if isinstance(exc, asyncpg.DataError | ValueError):
        return False
    return isinstance(exc, _UNAVAILABLE_ERRORS)


async def create_pool(url: str) -> asyncpg.Pool:
    """Open the pool; :class:`StoreUnavailable` (without the password) if unreachable."""
    try:
        return await asyncpg.create_pool(
            url,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
            timeout=CONNECT_TIMEOUT_SECONDS,
            init=_init_connection,
            reset=_keep_session,
        )
    except (
        *_UNAVAILABLE_ERRORS,
        asyncpg.InvalidCatalogNameError,  # no such database
        asyncpg.InvalidAuthorizationSpecificationError,  # bad user or password
    ) as exc:
        raise StoreUnavailable(
            f"PostgreSQL at {redact_url(url)} is unavailable: {type(exc).__name__}"
        ) from None
