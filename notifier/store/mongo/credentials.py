"""Provider credentials and admin keys on MongoDB: the ``credentials`` and ``admin_keys``
collections and their store methods (a mixin of :class:`~notifier.store.mongo.MongoStore`).

A credential is one document whose ``_id`` is ``{app, provider}``; a put is one
``find_one_and_update`` (an ``$inc`` of the version, so concurrent puts get distinct
versions), the compare-and-set form is the same without upsert, fenced on the version.
Same semantics as the PostgreSQL mixin; one contract suite holds both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

from bson import Binary
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from notifier.models import Platform, Status, as_utc
from notifier.store.base import (
    API_KEY_ID_CHARS,
    ApiKeyInfo,
    CredentialHealthRecord,
    StoredCredential,
    is_api_key_id,
)
from notifier.store.mongo.client import Document, mapped

CREDENTIAL_INDEXES = [
    # the workers' change poll (credentials_changed_since)
    IndexModel([("updated_at", ASCENDING)], name="credentials_updated_at"),
    # an app's credentials (the _id index covers the whole {app, provider} only)
    IndexModel([("_id.app", ASCENDING)], name="credentials_app"),
]
_PUT_RETRIES = 3  # two first puts of one credential race on the upsert: the loser retries


def _record(doc: Document) -> StoredCredential:
    return StoredCredential(
        app=str(doc["_id"]["app"]),
        provider=str(doc["_id"]["provider"]),
        secrets_key_id=str(doc["secrets_key_id"]),
        ciphertext=bytes(doc["ciphertext"]),
        public=dict(doc["public"]),
        version=int(doc["version"]),
        updated_at=as_utc(doc["updated_at"]),
        deleted=bool(doc.get("deleted", False)),
    )


class CredentialStoreMixin:
    """The credential and admin-key methods of the store protocol (MongoDB)."""

    _notifications: AsyncCollection[Document]
    _credentials: AsyncCollection[Document]
    _admin_keys: AsyncCollection[Document]
    _credential_health: AsyncCollection[Document]

    async def _setup_credentials(self) -> None:
        await self._credentials.create_indexes(CREDENTIAL_INDEXES)

    @mapped
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
        query: Document = {"_id": {"app": app, "provider": provider}}
        if if_version is not None:
            query["version"] = if_version
        update = {
            "$set": {
                "secrets_key_id": secrets_key_id,
                "ciphertext": Binary(ciphertext),
                "public": public,
                "updated_at": now,
                "deleted": False,
            },
            "$inc": {"version": 1},
        }
        for _ in range(_PUT_RETRIES):
            with suppress(DuplicateKeyError):
                doc = await self._credentials.find_one_and_update(
                    query, update, upsert=if_version is None, return_document=ReturnDocument.AFTER
                )
                return None if doc is None else _record(doc)
        raise RuntimeError("put_credential: the upsert lost its race three times")

    @mapped
    async def get_credentials(self, app: str) -> list[StoredCredential]:
        cursor = self._credentials.find({"_id.app": app, "deleted": False})
        return sorted((_record(d) for d in await cursor.to_list(None)), key=lambda c: c.provider)

    @mapped
    async def delete_credential(self, app: str, provider: str, now: datetime) -> bool:
        result = await self._credentials.update_one(
            {"_id": {"app": app, "provider": provider}, "deleted": False},
            {
                "$set": {"deleted": True, "ciphertext": Binary(b""), "updated_at": now},
                "$inc": {"version": 1},
            },
        )
        return result.modified_count == 1

    @mapped
    async def list_credentials(self) -> list[StoredCredential]:
        docs = await self._credentials.find({"deleted": False}).to_list(None)
        return sorted((_record(d) for d in docs), key=lambda c: (c.app, c.provider))

    @mapped
    async def credentials_changed_since(self, since: datetime) -> list[StoredCredential]:
        docs = await self._credentials.find({"updated_at": {"$gte": since}}).to_list(None)
        return sorted((_record(d) for d in docs), key=lambda c: (c.updated_at, c.app, c.provider))

    @mapped
    async def put_credential_health(self, record: CredentialHealthRecord) -> None:
        r = record
        with suppress(DuplicateKeyError):  # a later record is stored: it stands
            await self._credential_health.update_one(
                {
                    "_id": {"app": r.app, "provider": r.provider},
                    "changed_at": {"$lte": r.changed_at},
                },
                {"$set": {"healthy": r.healthy, "code": r.code, "changed_at": r.changed_at}},
                upsert=True,
            )

    @mapped
    async def get_credential_health(self, apps: Sequence[str]) -> list[CredentialHealthRecord]:
        docs = await self._credential_health.find({"_id.app": {"$in": list(apps)}}).to_list(None)
        records = [
            CredentialHealthRecord(
                d["_id"]["app"],
                d["_id"]["provider"],
                bool(d["healthy"]),
                as_utc(d["changed_at"]),
                d.get("code"),
            )
            for d in docs
        ]
        return sorted(records, key=lambda r: (r.app, r.provider))

    @mapped
    async def release_held(
        self, app: str | None, platform: Platform, now: datetime, *, codes: Collection[str]
    ) -> int:
        # A range of the status_next_attempt index (status, next_attempt_at): it reads the
        # not-yet-due retrying backlog, never final documents. Hinted, as the stand-in's
        # explain shows no plan to check the planner's choice by, and app_id (the app's
        # whole history) is the other candidate. A release is rare: no index of its own.
        match: Document = {
            "status": Status.RETRYING.value,
            "next_attempt_at": {"$gt": now},
            "target.platform": platform.value,
            "last_error.code": {"$in": sorted(codes)},
        }
        if app is not None:
            match["app"] = app
        result = await self._notifications.update_many(
            match,
            {"$set": {"next_attempt_at": now, "updated_at": now}},
            hint="status_next_attempt",
        )
        return result.modified_count

    @mapped
    async def add_admin_key(self, key_hash: str, now: datetime) -> None:
        with suppress(DuplicateKeyError):
            await self._admin_keys.update_one(
                {"_id": key_hash}, {"$setOnInsert": {"created_at": now}}, upsert=True
            )

    @mapped
    async def is_admin_key_hash(self, key_hash: str) -> bool:
        return await self._admin_keys.find_one({"_id": key_hash}, {"_id": 1}) is not None

    @mapped
    async def list_admin_keys(self) -> list[ApiKeyInfo]:
        cursor = self._admin_keys.find({}).sort([("created_at", 1), ("_id", 1)])
        return [
            ApiKeyInfo(str(d["_id"])[:API_KEY_ID_CHARS], "", as_utc(d["created_at"]))
            for d in await cursor.to_list(None)
        ]

    @mapped
    async def revoke_admin_key(self, key_id: str) -> bool:
        if not is_api_key_id(key_id):  # also keeps the regex a plain, anchored prefix
            return False
        result = await self._admin_keys.delete_many({"_id": {"$regex": f"^{key_id}"}})
        return result.deleted_count > 0
