"""What the benches share: a throw-away PostgreSQL database of their own.

Process start-up and health waits are in :mod:`notifier_tools.procs`, percentiles in
:func:`loadtest.accounting.percentile` and process CPU in :mod:`loadtest.resources`.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg


async def create_database(admin_url: str) -> tuple[str, str]:
    """Create ``notifier_bench_<pid>_<random>`` on the server of ``admin_url``: (name, url)."""
    name = f"notifier_bench_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


async def drop_database(admin_url: str, name: str) -> None:
    """Drop the database (open connections included)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
