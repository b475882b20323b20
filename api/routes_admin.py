"""``/v1/admin/apps/{app}/credentials/{fcm,apns}``: an app's provider credentials.

Admin keys only (api/middleware.py). PUT seals the credential with NOTIFIER_SECRETS_KEY
and stores it (201 when new, 200 when replaced); GET shows its fingerprint and ids, never
the key; DELETE removes it (the app falls back to the environment's credential). A body
that breaks a rule, or a key that does not load, is 422 naming the field; nothing stored.
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api import admin_schemas as admin
from api.body import read_json
from api.keys import KEYRING, STORE
from api.problems import Problem, field_error, unprocessable, validation_errors
from notifier.credentials.model import (
    ApnsCredential,
    Credential,
    CredentialError,
    FcmCredential,
    Provider,
)
from notifier.credentials.vault import CredentialInfo, check_app, describe, set_credential
from notifier.models import utcnow
from notifier.web import json_response

# Where a key that does not load is reported, per provider.
_KEY_POINTER = {Provider.FCM: ["service_account"], Provider.APNS: []}


def _app(request: web.Request) -> str:
    """The path's app name (a "/" in it never routes here); 422 if it breaks the rule."""
    try:
        return check_app(request.match_info["app"])
    except CredentialError as exc:
        raise unprocessable([field_error(["path", "app"], exc.message)]) from None


def _answer(info: CredentialInfo, status: int = 200) -> web.Response:
    return json_response(info.as_dict(), status)


def _parse(provider: Provider, body: Any) -> Credential:
    model: type[BaseModel] = (
        admin.FcmCredentialRequest if provider is Provider.FCM else admin.ApnsCredentialRequest
    )
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        raise unprocessable(validation_errors(exc)) from None
    try:
        if isinstance(req, admin.FcmCredentialRequest):
            return FcmCredential.parse(req.service_account.model_dump())
        apns = cast(admin.ApnsCredentialRequest, req)
        return ApnsCredential.parse(apns.private_key, apns.key_id, apns.team_id, apns.topics)
    except CredentialError as exc:
        loc = [*_KEY_POINTER[provider], exc.field]
        raise unprocessable([field_error(loc, exc.message)]) from None


def _handlers(provider: Provider) -> tuple[Any, Any, Any]:
    async def put(request: web.Request) -> web.Response:
        app = _app(request)
        credential = _parse(provider, await read_json(request))
        keyring = request.app.get(KEYRING)
        if keyring is None:
            raise Problem(
                503,
                "this API has no NOTIFIER_SECRETS_KEY: it cannot store credentials",
                type_="no-secrets-key",
            )
        info = await set_credential(request.app[STORE], keyring, app, credential)
        return _answer(info, 201 if info.version == 1 else 200)

    async def get(request: web.Request) -> web.Response:
        app = _app(request)
        for record in await request.app[STORE].get_credentials(app):
            if record.provider == provider.value:
                return _answer(describe(record))
        raise Problem(404, f"app {app!r} has no {provider.value} credential")

    async def delete(request: web.Request) -> web.Response:
        app = _app(request)
        if not await request.app[STORE].delete_credential(app, provider.value, utcnow()):
            raise Problem(404, f"app {app!r} has no {provider.value} credential")
        return web.Response(status=204)

    return put, get, delete


def setup(app: web.Application) -> None:
    for provider in Provider:
        put, get, delete = _handlers(provider)
        path = f"/v1/admin/apps/{{app}}/credentials/{provider.value}"
        app.router.add_put(path, put)
        app.router.add_get(path, get, allow_head=False)
        app.router.add_delete(path, delete)
