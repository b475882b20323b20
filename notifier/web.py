"""What the API and the worker's HTTP side-port both answer with: JSON bodies via orjson."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(body: Any, status: int = 200) -> web.Response:
    """``body`` as ``application/json``, serialized by orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
