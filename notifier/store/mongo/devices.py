"""Devices and API keys on MongoDB: the registry half of :class:`~notifier.store.mongo.MongoStore`.

Devices are unique per ``(app, token)`` (a unique index); API keys are documents whose ``_id``
is the key's hash. Same semantics as the PostgreSQL store's device and key statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from notifier.models import Device, Platform, as_utc
from notifier.store.base import API_KEY_ID_CHARS, ApiKeyInfo, is_api_key_id
from notifier.store.mongo.client import Document, mapped
from notifier.store.mongo.documents import bson_time, document_to_device
from notifier.store.semantics import by_user


class DeviceStoreMixin:
    """The device-registry and API-key methods of the store protocol."""

    _devices: AsyncCollection[Document]
    _api_keys: AsyncCollection[Document]

    @mapped
    async def upsert_device(
        self, app: str, token: str, platform: Platform, user_id: str | None, now: datetime
    ) -> tuple[Device, bool]:
        update: dict[str, Any] = {
            "$set": {
                "platform": platform.value,
                "user_id": user_id,
                "active": True,
                "updated_at": now,
            },
            "$unset": {"deactivated_reason": ""},
            "$setOnInsert": {"created_at": now},
        }
        query = {"app": app, "token": token}
        try:
            before = await self._devices.find_one_and_update(
                query, update, upsert=True, return_document=ReturnDocument.BEFORE
            )
        except DuplicateKeyError:  # a concurrent first registration won: now it is a refresh
            before = await self._devices.find_one_and_update(
                query, update, upsert=True, return_document=ReturnDocument.BEFORE
            )
        # BEFORE tells a creation (None) from a refresh; the new state is known from the update.
        created_at = bson_time(now) if before is None else document_to_device(before).created_at
        device = Device(
            app=app,
            token=token,
            platform=platform,
            user_id=user_id,
            active=True,
            created_at=created_at,
            updated_at=bson_time(now),
        )
        return device, before is None

    @mapped
    async def delete_device(self, app: str, token: str) -> bool:
        result = await self._devices.delete_one({"app": app, "token": token})
        return result.deleted_count == 1

    @mapped
    async def get_device(self, app: str, token: str) -> Device | None:
        doc = await self._devices.find_one({"app": app, "token": token})
        return document_to_device(doc) if doc is not None else None

    @mapped
    async def list_devices_of_users(
        self, app: str, user_ids: Sequence[str], *, active_only: bool = False
    ) -> dict[str, list[Device]]:
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        query: Document = {"app": app, "user_id": {"$in": wanted}}
        if active_only:
            query["active"] = True
        cursor = self._devices.find(query).sort([("created_at", 1), ("token", 1)])
        return by_user(document_to_device(d) for d in await cursor.to_list(None))

    @mapped
    async def deactivate_device(
        self,
        app: str,
        token: str,
        reason: str,
        now: datetime,
        *,
        unless_registered_after: datetime | None = None,
    ) -> bool:
        query: Document = {"app": app, "token": token}
        if unless_registered_after is not None:
            query["updated_at"] = {"$lte": unless_registered_after}
        result = await self._devices.update_one(
            query,
            {"$set": {"active": False, "deactivated_reason": reason, "updated_at": now}},
        )
        return result.matched_count == 1

    # -- API keys -------------------------------------------------------------------------------
    @mapped
    async def add_api_key(self, app: str, key_hash: str, now: datetime) -> None:
        # A concurrent add of the same hash may win the upsert: the key is stored, as asked.
        with suppress(DuplicateKeyError):
            await self._api_keys.update_one(
                {"_id": key_hash},
                {"$setOnInsert": {"app": app, "created_at": now}},
                upsert=True,
            )

    @mapped
    async def app_for_key_hash(self, key_hash: str) -> str | None:
        doc = await self._api_keys.find_one({"_id": key_hash}, {"app": 1})
        return None if doc is None else str(doc["app"])

    @mapped
    async def list_api_keys(self, app: str | None = None) -> list[ApiKeyInfo]:
        query: Document = {} if app is None else {"app": app}
        cursor = self._api_keys.find(query).sort([("created_at", 1), ("_id", 1)])
        return [
            ApiKeyInfo(str(d["_id"])[:API_KEY_ID_CHARS], str(d["app"]), as_utc(d["created_at"]))
            for d in await cursor.to_list(None)
        ]

    @mapped
    async def revoke_api_key(self, key_id: str) -> str | None:
        if not is_api_key_id(key_id):  # also keeps the regex below a plain, anchored prefix
            return None
        # An anchored prefix regex on _id is an index range scan.
        query = {"_id": {"$regex": f"^{key_id}"}}
        docs = await self._api_keys.find(query, {"app": 1}).to_list(None)
        if not docs:
            return None
        await self._api_keys.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
        return str(docs[0]["app"])
