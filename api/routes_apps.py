"""``/v1/apps/me/...``: what the calling app may read about itself (issue 16).

``GET /v1/apps/me/credentials/health``: per provider, whether the app's pushes go out
under its own credential or the environment's, and that credential's health as the
workers last wrote it to the store (they write on a change of state only, so this is two
indexed reads, no decryption).
"""

from __future__ import annotations

from aiohttp import web

from api import responses as shape
from api.keys import APP_NAME, STORE
from api.views import json_response
from notifier.models import Platform
from notifier.providers.health import DEFAULT_APP


async def get_credentials_health(request: web.Request) -> web.Response:
    app = request[APP_NAME]
    store = request.app[STORE]
    own = {c.provider for c in await store.get_credentials(app)}
    records = {
        (r.app, r.provider): r for r in await store.get_credential_health([app, DEFAULT_APP])
    }
    items: list[shape.CredentialHealth] = []
    for platform in Platform:
        mine = platform.value in own
        record = records.get((app if mine else DEFAULT_APP, platform.value))
        items.append(
            {
                "provider": platform,
                "own": mine,
                "healthy": None if record is None else record.healthy,
                "changed_at": None
                if record is None
                else record.changed_at.isoformat().replace("+00:00", "Z"),
                "code": None if record is None else record.code,
            }
        )
    body: shape.CredentialHealthList = {"app": app, "credentials": items}
    return json_response(body)


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/apps/me/credentials/health", get_credentials_health, allow_head=False)
