"""The OpenAPI document and the router agree, both ways; it is valid OpenAPI 3.1."""

from __future__ import annotations

from aiohttp import web

from api.openapi import openapi_document
from tests.api.conftest import Api


def _router_operations(app: web.Application) -> set[tuple[str, str]]:
    ops = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"route without a path: {route}"
        ops.add((route.method.lower(), path))
    return ops


async def test_every_route_is_documented_and_every_documented_route_exists(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status == 200
    document = await r.json()
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == _router_operations(api.client.app)


def test_request_schemas_come_from_the_models() -> None:
    schemas = openapi_document()["components"]["schemas"]
    request = schemas["NotificationRequest"]
    assert request["additionalProperties"] is False
    assert set(request["properties"]) >= {"to", "title", "body", "data", "scheduled_for"}
    assert schemas["BatchRequest"]["properties"]["notifications"]["maxItems"] == 500
