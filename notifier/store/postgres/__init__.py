"""The notification store on PostgreSQL (asyncpg): :class:`PostgresStore`."""

from notifier.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
