"""Answers as their shapes (``api/responses.py``) and the request -> document mapping."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from api import responses as shape
from api.schemas import NotificationRequest
from notifier.models import Device, Notification, Status, Target, new_id
from notifier.web import json_response as web_json_response


def json_response(body: shape.Answer, status: int = 200) -> web.Response:
    """A JSON answer; only a shape of ``api/responses.py``, the ones the OpenAPI document
    describes (the typed door to :func:`notifier.web.json_response`)."""
    return web_json_response(body, status)


def fingerprint(body: Any) -> str:
    """sha256 of the canonical JSON of a request body (sorted keys, compact)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _iso_or_none(value: datetime | None) -> str | None:
    return _iso(value) if value is not None else None


def accepted_status(n: Notification) -> shape.AcceptedStatus:
    """The status the first answer gave: scheduled when due after its creation."""
    if n.scheduled_for is not None and n.scheduled_for > n.created_at:
        return Status.SCHEDULED
    return Status.PENDING


def build_notification(
    req: NotificationRequest,
    app: str,
    target: Target,
    now: datetime,
    *,
    user_id: str | None = None,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Notification:
    scheduled = req.scheduled_for is not None and req.scheduled_for > now
    return Notification(
        id=new_id(),
        app=app,
        target=target,
        created_at=now,
        updated_at=now,
        user_id=user_id if user_id is not None else req.user_id,
        title=req.title,
        body=req.body,
        data=dict(req.data),
        priority=req.priority,
        lane=req.lane,
        collapse_key=req.collapse_key,
        apns_topic=req.apns_topic,
        ttl_seconds=req.ttl_seconds,
        status=Status.SCHEDULED if scheduled else Status.PENDING,
        scheduled_for=req.scheduled_for,
        next_attempt_at=req.scheduled_for if scheduled else None,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
    )


def notification_json(n: Notification) -> shape.Notification:
    error = n.last_error
    return {
        "id": n.id,
        "user_id": n.user_id,
        "target": {"platform": n.target.platform, "token": n.target.token},
        "title": n.title,
        "body": n.body,
        "data": n.data,
        "priority": n.priority,
        "lane": n.lane,
        "ttl_seconds": n.ttl_seconds,
        "collapse_key": n.collapse_key,
        "apns_topic": n.apns_topic,
        "status": n.status,
        "scheduled_for": _iso_or_none(n.scheduled_for),
        "attempts": n.attempts,
        "history": [
            {
                "worker": a.worker,
                "started_at": _iso(a.started_at),
                "finished_at": _iso_or_none(a.finished_at),
                "outcome": a.outcome,
                "provider_status": a.provider_status,
            }
            for a in n.history
        ],
        "last_error": (
            {"code": error.code, "message": error.message, "provider_status": error.provider_status}
            if error is not None
            else None
        ),
        "sent_at": _iso_or_none(n.sent_at),
        "provider_message_id": n.provider_message_id,
        "created_at": _iso(n.created_at),
        "updated_at": _iso(n.updated_at),
    }


def device_json(d: Device) -> shape.Device:
    return {
        "token": d.token,
        "user_id": d.user_id,
        "platform": d.platform,
        "active": d.active,
        "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
    }
