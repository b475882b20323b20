"""``OPTIONS`` on every route: 204 with ``Allow`` naming its methods (RFC 9110 9.3.7).

No API key is needed: the answer says only what the OpenAPI document already says, and a
client (or a CORS preflight, which carries no credentials) may ask before it holds a key.
An unknown path stays 404.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler


def _answer(allow: str) -> Handler:
    async def options(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"Allow": allow})

    return options


def setup(app: web.Application) -> None:
    """Add OPTIONS to each path routed so far (call after every other route).

    One path may span several resources (aiohttp merges a path's routes only when they
    are added one after another), so methods are gathered by path first.
    """
    methods: dict[str, set[str]] = {}
    first: dict[str, web.Resource] = {}
    for resource in app.router.resources():
        if not isinstance(resource, web.Resource):  # static files etc.: none here
            continue
        methods.setdefault(resource.canonical, set()).update(r.method for r in resource)
        first.setdefault(resource.canonical, resource)
    for path, resource in first.items():
        if "OPTIONS" not in methods[path]:
            resource.add_route("OPTIONS", _answer(", ".join(sorted(methods[path] | {"OPTIONS"}))))
