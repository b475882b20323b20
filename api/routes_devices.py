"""``/v1/devices`` and ``/v1/users/{user_id}/devices``: the app's device registry."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from api import responses as shape
from api.body import has_nul, read_json
from api.keys import APP_NAME, STORE
from api.problems import Problem, field_error, unprocessable, validation_errors
from api.schemas import DeviceRequest, check_token
from api.views import device_json
from notifier.models import utcnow
from notifier.web import json_response


async def put_device(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    body = await read_json(request)
    try:
        req = DeviceRequest.model_validate(body)
    except ValidationError as exc:
        raise unprocessable(validation_errors(exc)) from None
    try:
        check_token(req.platform, token)
    except ValueError as exc:
        raise unprocessable([field_error(["path", "token"], str(exc))]) from None
    device, created = await request.app[STORE].upsert_device(
        request[APP_NAME], token, req.platform, req.user_id, utcnow()
    )
    return json_response(device_json(device), 201 if created else 200)


async def delete_device(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if has_nul(token) or not await request.app[STORE].delete_device(request[APP_NAME], token):
        raise Problem(404, "no such device")
    return web.Response(status=204)


async def list_user_devices(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if has_nul(user_id) or len(user_id) > 256:
        raise unprocessable([field_error(["path", "user_id"], "1..256 characters, no NUL")])
    devices = await request.app[STORE].list_devices(request[APP_NAME], user_id)
    body: shape.DeviceList = {"items": [device_json(d) for d in devices]}
    return json_response(body)


def setup(app: web.Application) -> None:
    app.router.add_put("/v1/devices/{token}", put_device)
    app.router.add_delete("/v1/devices/{token}", delete_device)
    app.router.add_get("/v1/users/{user_id}/devices", list_user_devices, allow_head=False)
