"""Provider credentials and admin keys on PostgreSQL: their tables, statements and the
store methods (a mixin of :class:`~notifier.store.postgres.PostgresStore`).

Same semantics as the MongoDB mixin; the contract suite (tests/store/test_contract_credentials.py)
holds both. A put is one upsert whose version is computed in the statement, so two
concurrent puts get distinct versions; the compare-and-set form is an
UPDATE fenced on the version.
"""

# The f-strings below interpolate only constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from notifier.models import Platform
from notifier.store.base import (
    API_KEY_ID_CHARS,
    ApiKeyInfo,
    CredentialHealthRecord,
    StoredCredential,
    is_api_key_id,
)
from notifier.store.postgres.rows import storable

SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    app text NOT NULL,
    provider text NOT NULL,
    secrets_key_id text NOT NULL,
    ciphertext bytea NOT NULL,
    public jsonb NOT NULL,
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (app, provider)
);
CREATE INDEX IF NOT EXISTS credentials_updated_at ON credentials (updated_at);

CREATE TABLE IF NOT EXISTS credential_health (
    app text NOT NULL,
    provider text NOT NULL,
    healthy boolean NOT NULL,
    code text,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (app, provider)
);

CREATE TABLE IF NOT EXISTS admin_keys (
    key_hash text PRIMARY KEY,
    created_at timestamptz NOT NULL
);
"""

# release_held: held notifications made due now. status = 'retrying' and next_attempt_at > $3
# are a range of the partial index notifications_open_status_next_attempt (status,
# next_attempt_at) WHERE status IN OPEN: it reads the not-yet-due retrying backlog only, and
# a release is rare (a credential replaced, deleted or healed), so no index of its own.
RELEASE_HELD = """
UPDATE notifications SET next_attempt_at = $2, updated_at = $2
WHERE status = 'retrying' AND next_attempt_at > $2 AND target_platform = $1
  AND last_error->>'code' = ANY($3::text[])
"""
RELEASE_HELD_OF_APP = RELEASE_HELD + "  AND app = $4\n"

_COLUMNS = "app, provider, secrets_key_id, ciphertext, public, version, updated_at, deleted"
PUT = f"""
INSERT INTO credentials AS c ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5::jsonb, 1, $6, false)
ON CONFLICT (app, provider) DO UPDATE
SET secrets_key_id = EXCLUDED.secrets_key_id, ciphertext = EXCLUDED.ciphertext,
    public = EXCLUDED.public, version = c.version + 1, updated_at = EXCLUDED.updated_at,
    deleted = false
RETURNING {_COLUMNS}
"""
PUT_IF_VERSION = f"""
UPDATE credentials SET secrets_key_id = $3, ciphertext = $4, public = $5::jsonb,
    version = version + 1, updated_at = $6, deleted = false
WHERE app = $1 AND provider = $2 AND version = $7
RETURNING {_COLUMNS}
"""
GET_FOR_APP = f"""
SELECT {_COLUMNS} FROM credentials WHERE app = $1 AND NOT deleted ORDER BY provider
"""
DELETE = """
UPDATE credentials SET deleted = true, ciphertext = ''::bytea, version = version + 1,
    updated_at = $3
WHERE app = $1 AND provider = $2 AND NOT deleted
"""
LIST_ALL = f"SELECT {_COLUMNS} FROM credentials WHERE NOT deleted ORDER BY app, provider"
CHANGED_SINCE = f"""
SELECT {_COLUMNS} FROM credentials WHERE updated_at >= $1 ORDER BY updated_at, app, provider
"""

PUT_HEALTH = """
INSERT INTO credential_health AS h (app, provider, healthy, code, changed_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (app, provider) DO UPDATE
SET healthy = EXCLUDED.healthy, code = EXCLUDED.code, changed_at = EXCLUDED.changed_at
WHERE h.changed_at <= EXCLUDED.changed_at
"""
GET_HEALTH = """
SELECT app, provider, healthy, code, changed_at FROM credential_health
WHERE app = ANY($1::text[]) ORDER BY app, provider
"""

ADD_ADMIN_KEY = """
INSERT INTO admin_keys (key_hash, created_at) VALUES ($1, $2) ON CONFLICT (key_hash) DO NOTHING
"""
IS_ADMIN_KEY = "SELECT 1 FROM admin_keys WHERE key_hash = $1"
LIST_ADMIN_KEYS = f"""
SELECT left(key_hash, {API_KEY_ID_CHARS}) AS id, created_at FROM admin_keys
ORDER BY created_at, key_hash
"""
REVOKE_ADMIN_KEY = f"DELETE FROM admin_keys WHERE left(key_hash, {API_KEY_ID_CHARS}) = $1"


def _record(row: Any) -> StoredCredential:
    public = row["public"]
    return StoredCredential(
        app=row["app"],
        provider=row["provider"],
        secrets_key_id=row["secrets_key_id"],
        ciphertext=bytes(row["ciphertext"]),
        public=json.loads(public) if isinstance(public, str) else dict(public),
        version=int(row["version"]),
        updated_at=row["updated_at"],
        deleted=bool(row["deleted"]),
    )


class CredentialStoreMixin:
    """The credential and admin-key methods of the store protocol (PostgreSQL)."""

    # the store's plumbing (PostgresStore defines them)
    _fetch: Callable[..., Awaitable[list[Any]]]
    _fetchrow: Callable[..., Awaitable[Any]]
    _execute: Callable[..., Awaitable[str]]

    async def put_credential(
        self,
        app: str,
        provider: str,
        *,
        secrets_key_id: str,
        ciphertext: bytes,
        public: dict[str, Any],
        now: datetime,
        if_version: int | None = None,
    ) -> StoredCredential | None:
        args: list[Any] = [app, provider, secrets_key_id, ciphertext, json.dumps(public), now]
        if if_version is None:
            row = await self._fetchrow(PUT, *args)
        else:
            row = await self._fetchrow(PUT_IF_VERSION, *args, if_version)
        return None if row is None else _record(row)

    async def get_credentials(self, app: str) -> list[StoredCredential]:
        if not storable(app):
            return []
        return [_record(r) for r in await self._fetch(GET_FOR_APP, app)]

    async def delete_credential(self, app: str, provider: str, now: datetime) -> bool:
        if not storable(app, provider):
            return False
        return await self._execute(DELETE, app, provider, now) != "UPDATE 0"

    async def list_credentials(self) -> list[StoredCredential]:
        return [_record(r) for r in await self._fetch(LIST_ALL)]

    async def credentials_changed_since(self, since: datetime) -> list[StoredCredential]:
        return [_record(r) for r in await self._fetch(CHANGED_SINCE, since)]

    async def put_credential_health(self, record: CredentialHealthRecord) -> None:
        r = record
        await self._execute(PUT_HEALTH, r.app, r.provider, r.healthy, r.code, r.changed_at)

    async def get_credential_health(self, apps: Sequence[str]) -> list[CredentialHealthRecord]:
        wanted = [a for a in apps if storable(a)]
        rows = await self._fetch(GET_HEALTH, wanted) if wanted else []
        return [
            CredentialHealthRecord(
                r["app"], r["provider"], bool(r["healthy"]), r["changed_at"], r["code"]
            )
            for r in rows
        ]

    async def release_held(
        self, app: str | None, platform: Platform, now: datetime, *, codes: Collection[str]
    ) -> int:
        args: list[Any] = [platform.value, now, sorted(codes)]
        if app is None:
            status = await self._execute(RELEASE_HELD, *args)
        elif not storable(app):
            return 0
        else:
            status = await self._execute(RELEASE_HELD_OF_APP, *args, app)
        return int(status.split()[-1])

    async def add_admin_key(self, key_hash: str, now: datetime) -> None:
        await self._execute(ADD_ADMIN_KEY, key_hash, now)

    async def is_admin_key_hash(self, key_hash: str) -> bool:
        if not storable(key_hash):
            return False
        return await self._fetchrow(IS_ADMIN_KEY, key_hash) is not None

    async def list_admin_keys(self) -> list[ApiKeyInfo]:
        rows = await self._fetch(LIST_ADMIN_KEYS)
        return [ApiKeyInfo(r["id"], "", r["created_at"]) for r in rows]

    async def revoke_admin_key(self, key_id: str) -> bool:
        if not is_api_key_id(key_id):
            return False
        return await self._execute(REVOKE_ADMIN_KEY, key_id) != "DELETE 0"
