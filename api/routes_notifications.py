"""``/v1/notifications``: accept (single, user fan-out, batch), read, list, cancel."""

from __future__ import annotations

import asyncio
import hmac
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from api import responses as shape
from api.body import has_nul, read_json
from api.keys import APP_NAME, SETTINGS, STORE, WRITER
from api.problems import Problem, field_error, unprocessable, validation_errors
from api.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_BATCH_BODY_BYTES,
    BatchEnvelope,
    BatchItem,
    ListQuery,
    NotificationRequest,
    UserTarget,
)
from api.topics import allowed_topics, topic_refusal
from api.views import (
    accepted_status,
    build_notification,
    fingerprint,
    json_response,
    notification_json,
)
from api.writer import Writer
from notifier.metrics import ACCEPTED
from notifier.models import Device, Notification, Target, utcnow
from notifier.store.base import CancelResult, InsertResult, NotificationStore, StoreUnavailable

_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# A batch's items are validated this many at a time, the event loop given back between
# slices: 500 items in one go held a replica's loop for 30 to 100 ms on a loaded 2-core
# host, and every transactional request on that replica (its read, its insert's and its
# publish's completions) waited that long.
ITEMS_PER_TURN = 50

R = TypeVar("R")


class _Plan:
    """The documents one request (or batch item) creates, and how to answer for them."""

    def __init__(self, docs: list[Notification], fp: str | None, fan_out: bool) -> None:
        self.docs = docs
        self.fingerprint = fp
        self.fan_out = fan_out


def _answer(docs: Sequence[Notification], fan_out: bool) -> shape.Accepted:
    status, lane = accepted_status(docs[0]), docs[0].lane  # a fan-out's documents share both
    if fan_out:
        return {"ids": sorted(d.id for d in docs), "status": status, "lane": lane}
    return {"id": docs[0].id, "status": status, "lane": lane}


def _replay(stored: Sequence[Notification], fp: str | None) -> shape.Accepted:
    """The first answer for an idempotency key, or a 409 when the body differs."""
    if not all(hmac.compare_digest(d.request_fingerprint or "", fp or "") for d in stored):
        raise Problem(
            409,
            "this Idempotency-Key was used with another request body",
            type_="idempotency-conflict",
        )
    return _answer(stored, any("#" in (d.idempotency_key or "") for d in stored))


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise unprocessable(
            [field_error(["header", "Idempotency-Key"], "1..200 printable ASCII characters, no #")]
        )
    return key


async def _plan(
    store: NotificationStore,
    app: str,
    req: NotificationRequest,
    key: str | None,
    fp: str | None,
    now: datetime,
    loc: Sequence[str | int] = (),
) -> _Plan:
    """The documents for a request; a user target expands to the user's active devices."""
    devices: list[Device] = []
    if isinstance(req.to, UserTarget):
        devices = await store.list_devices(app, req.to.user_id, active_only=True)
    return _planned(app, req, key, fp, now, loc, devices)


def _planned(
    app: str,
    req: NotificationRequest,
    key: str | None,
    fp: str | None,
    now: datetime,
    loc: Sequence[str | int],
    devices: Sequence[Device],
) -> _Plan:
    """:func:`_plan` with the user's active ``devices`` already read (none for a token)."""
    if not isinstance(req.to, UserTarget):
        target = Target(req.to.platform, req.to.token)
        doc = build_notification(req, app, target, now, idempotency_key=key, request_fingerprint=fp)
        return _Plan([doc], fp, fan_out=False)
    if not devices:
        raise unprocessable(
            [field_error([*loc, "to", "user_id"], "this user has no active device")],
            "no active device to send to",
        )
    docs = [
        build_notification(
            req,
            app,
            Target(d.platform, d.token),
            now,
            user_id=req.to.user_id,
            idempotency_key=f"{key}#{n}" if key is not None else None,
            request_fingerprint=fp,
        )
        for n, d in enumerate(devices)
    ]
    return _Plan(docs, fp, fan_out=True)


def _count_accepted(docs: Sequence[Notification]) -> None:
    counts = Counter((d.target.platform.value, d.priority.value, d.lane.value) for d in docs)
    for (platform, priority, lane), count in counts.items():
        ACCEPTED.labels(platform, priority, lane).inc(count)


async def create_notification(request: web.Request) -> web.Response:
    app = request[APP_NAME]
    store = request.app[STORE]
    body = await read_json(request)
    key = _idempotency_key(request)
    try:
        req = NotificationRequest.model_validate(body)
    except ValidationError as exc:
        raise unprocessable(validation_errors(exc)) from None
    if req.apns_topic is not None:
        allowed = await allowed_topics(store, request.app[SETTINGS], app)
        refused = topic_refusal(req.apns_topic, allowed)
        if refused is not None:
            raise refused
    fp = fingerprint(body) if key is not None else None
    writer = request.app[WRITER]
    if key is not None:
        stored = await store.list_by_idempotency_key(app, key)
        if stored:
            answer = _replay(stored, fp)
            await writer.republish(stored)
            return json_response(answer, 200)
    plan = await _plan(store, app, req, key, fp, utcnow())
    results = await writer.write(plan.docs)
    created = [r.notification for r in results if r.created]
    if not created:  # another replica stored this key first
        stored = [r.notification for r in results]
        answer = _replay(stored, fp)
        await writer.republish(stored)
        return json_response(answer, 200)
    _count_accepted(created)
    return json_response(_answer([r.notification for r in results], plan.fan_out), 202)


@dataclass(frozen=True, slots=True)
class _Lookups:
    """What a batch's user-target items need from the store, read for all of them at once
    (two round trips whatever the number of items): stored documents by idempotency key,
    and active devices by user."""

    stored: dict[str, list[Notification]]
    devices: dict[str, list[Device]]

    @classmethod
    async def read(cls, store: NotificationStore, app: str, items: Sequence[Any]) -> _Lookups:
        users = [i for i in items if isinstance(i, BatchItem) and isinstance(i.to, UserTarget)]
        keys = [i.idempotency_key for i in users if i.idempotency_key is not None]
        stored = await store.list_by_idempotency_keys(app, keys) if keys else {}
        user_ids = [i.to.user_id for i in users if isinstance(i.to, UserTarget)]
        devices = (
            await store.list_devices_of_users(app, user_ids, active_only=True) if user_ids else {}
        )
        return cls(stored, devices)


async def _in_turns(count: int, one: Callable[[int], R]) -> list[R]:
    """``[one(i) for i in range(count)]``, giving the event loop back every
    ``ITEMS_PER_TURN`` items, so that other requests' steps run in between."""
    out: list[R] = []
    for start in range(0, count, ITEMS_PER_TURN):
        if start:
            await asyncio.sleep(0)
        out.extend(one(i) for i in range(start, min(count, start + ITEMS_PER_TURN)))
    return out


def _validated(item: dict[str, Any], index: int) -> BatchItem | shape.BatchError:
    try:
        return BatchItem.model_validate(item)
    except ValidationError as exc:
        return {"error": unprocessable(validation_errors(exc, ("notifications", index))).to_dict()}


def _plan_item(
    app: str,
    item: dict[str, Any],
    req: BatchItem | shape.BatchError,
    index: int,
    now: datetime,
    lookups: _Lookups,
    replayed: list[Notification],
) -> _Plan | shape.Accepted | shape.BatchError:
    """A batch item's plan, or its final answer (an error or an idempotent replay, whose
    stored documents are added to ``replayed``)."""
    if not isinstance(req, BatchItem):
        return req
    key = req.idempotency_key
    fp = fingerprint(item) if key is not None else None
    try:
        devices: list[Device] = []
        if isinstance(req.to, UserTarget):
            stored = lookups.stored.get(key, []) if key is not None else []
            if stored:
                answer = _replay(stored, fp)
                replayed.extend(stored)
                return answer
            devices = lookups.devices.get(req.to.user_id, [])
        return _planned(app, req, key, fp, now, ("notifications", index), devices)
    except Problem as problem:
        return {"error": problem.to_dict()}


async def _write_items(writer: Writer, plans: list[_Plan]) -> list[list[InsertResult] | Problem]:
    """Each item's insert results; an item the store refuses gets a 500 problem of its own.

    One write for the whole batch; only if the store refuses it (for anything but being
    unavailable: then the whole request is a 503) is each item written as a request of its
    own, which the writer isolates, so one bad item never stops the valid ones.
    """
    docs = [d for p in plans for d in p.docs]
    if not docs:
        return []
    try:
        results = await writer.write(docs)
    except StoreUnavailable:
        raise
    except Exception:
        alone = await asyncio.gather(*(writer.write(p.docs) for p in plans), return_exceptions=True)
        return [_item_outcome(o) for o in alone]
    out: list[list[InsertResult] | Problem] = []
    start = 0
    for p in plans:
        out.append(results[start : start + len(p.docs)])
        start += len(p.docs)
    return out


def _item_outcome(outcome: list[InsertResult] | BaseException) -> list[InsertResult] | Problem:
    if isinstance(outcome, StoreUnavailable):
        return Problem(503, "the store is unavailable; retry this item later")
    if isinstance(outcome, BaseException):  # logged by the writer, with its traceback
        return Problem(500, "internal error: this item could not be stored")
    return outcome


async def create_batch(request: web.Request) -> web.Response:
    app = request[APP_NAME]
    store = request.app[STORE]
    body = await read_json(request, MAX_BATCH_BODY_BYTES)
    try:
        envelope = BatchEnvelope.model_validate(body)
    except ValidationError as exc:
        raise unprocessable(validation_errors(exc)) from None
    now = utcnow()
    replayed: list[Notification] = []
    raw = envelope.notifications
    items = await _in_turns(len(raw), lambda i: _validated(raw[i], i))
    if any(isinstance(i, BatchItem) and i.apns_topic is not None for i in items):
        allowed = await allowed_topics(store, request.app[SETTINGS], app)
        for index, item in enumerate(items):
            if isinstance(item, BatchItem):
                refused = topic_refusal(item.apns_topic, allowed, "notifications", index)
                if refused is not None:
                    items[index] = {"error": refused.to_dict()}
    lookups = await _Lookups.read(store, app, items)
    # in one go: the ids (UUIDv7, their creation time) are made here, and the write follows
    planned = [
        _plan_item(app, raw[i], items[i], i, now, lookups, replayed) for i in range(len(raw))
    ]
    writer = request.app[WRITER]
    written = iter(await _write_items(writer, [p for p in planned if isinstance(p, _Plan)]))
    answers: list[shape.AcceptedOne | shape.AcceptedMany | shape.BatchError] = []
    created: list[Notification] = []
    for p in planned:
        if not isinstance(p, _Plan):
            answers.append(p)
            continue
        mine = next(written)
        if isinstance(mine, Problem):
            answers.append({"error": mine.to_dict()})
            continue
        new = [r.notification for r in mine if r.created]
        created.extend(new)
        answer: shape.Accepted | shape.BatchError
        try:
            if new:
                answer = _answer(new, p.fan_out)
            else:
                answer = _replay([r.notification for r in mine], p.fingerprint)
                replayed.extend(r.notification for r in mine)
        except Problem as problem:
            answer = {"error": problem.to_dict()}
        answers.append(answer)
    _count_accepted(created)
    # Not what this request stored itself (an earlier item of the batch with the same key):
    # the writer published those already.
    ours = {n.id for n in created}
    await writer.republish([n for n in replayed if n.id not in ours])
    results_body: shape.BatchResults = {"results": answers}
    return json_response(results_body, 200)


async def get_notification(request: web.Request) -> web.Response:
    nid = request.match_info["id"]
    found = None if has_nul(nid) else await request.app[STORE].get(nid, request[APP_NAME])
    if found is None:
        raise Problem(404, "no such notification")
    return json_response(notification_json(found))


async def list_notifications(request: web.Request) -> web.Response:
    try:
        query = ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise unprocessable(validation_errors(exc, ("query",))) from None
    if has_nul(*(v for v in (query.user_id, query.after) if v is not None)):
        raise unprocessable([field_error(["query"], "must not contain NUL")])
    page = await request.app[STORE].list_notifications(
        request[APP_NAME],
        user_id=query.user_id,
        status=query.status,
        limit=query.limit,
        after=query.after,
    )
    body: shape.NotificationPage = {
        "items": [notification_json(n) for n in page.items],
        "next": page.next,
    }
    return json_response(body)


async def cancel_notification(request: web.Request) -> web.Response:
    nid = request.match_info["id"]
    if has_nul(nid):
        raise Problem(404, "no such notification")
    result, found = await request.app[STORE].cancel(nid, request[APP_NAME], utcnow())
    if result is CancelResult.NOT_FOUND or found is None:
        raise Problem(404, "no such notification")
    if result is CancelResult.CONFLICT:
        raise Problem(409, f"cannot cancel: the notification is {found.status.value} or being sent")
    return json_response(notification_json(found))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/notifications", create_notification)
    app.router.add_post("/v1/notifications/batch", create_batch)
    app.router.add_get("/v1/notifications", list_notifications, allow_head=False)
    app.router.add_get("/v1/notifications/{id}", get_notification, allow_head=False)
    app.router.add_delete("/v1/notifications/{id}", cancel_notification)
