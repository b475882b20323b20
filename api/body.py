"""Reading a JSON request body: 415 for another media type, 413 past 64 KiB, 400 if malformed."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from api.problems import Problem, field_error
from api.schemas import MAX_BODY_BYTES

_NUL_ESCAPE = b"\\u0000"


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request) -> Any:
    """The parsed body; raises :class:`Problem` (400/413/415) before anything is stored."""
    if not _is_json(request.content_type):
        raise Problem(415, "send the body as application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Problem(413, "the request body is larger than 64 KiB")
    raw = await request.read()  # client_max_size enforces the limit on chunked bodies
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"malformed JSON: {exc}", type_="malformed-json") from None
    if _NUL_ESCAPE in raw:
        errors = nul_errors(body)
        if errors:
            raise Problem(422, "strings must not contain NUL", errors=errors, type_="validation")
    return body


def nul_errors(value: Any, loc: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """An error for every string (key or value) holding a NUL character, which no store keeps."""
    if isinstance(value, str):
        return [field_error(loc, "must not contain NUL")] if "\x00" in value else []
    out: list[dict[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                out.append(field_error((*loc, k), "keys must not contain NUL"))
            out.extend(nul_errors(v, (*loc, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(nul_errors(v, (*loc, i)))
    return out


def has_nul(*values: str) -> bool:
    return any("\x00" in v for v in values)
