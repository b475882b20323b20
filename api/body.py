"""Reading a JSON request body: 415 for another media type or content coding, 413 past
the route's size limit (64 KiB, 2 MiB for a batch), 408 if it does not arrive within
``NOTIFIER_API_BODY_TIMEOUT_SECONDS``, 400 if malformed or not decodable."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from api.edge import CONTENT_CODINGS, abandon_body, unsupported_coding
from api.keys import SETTINGS
from api.problems import Problem, field_error
from api.responses import FieldError
from api.schemas import MAX_BODY_BYTES

_NUL_ESCAPE = b"\\u0000"


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def size_text(size_bytes: int) -> str:
    """``65536`` -> ``"64 KiB"``, ``2097152`` -> ``"2 MiB"``: a limit as a reader states it."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size_bytes >= size and size_bytes % size == 0:
            return f"{size_bytes // size} {unit}"
    return f"{size_bytes} bytes"


def too_large(max_bytes: int) -> Problem:
    return Problem(413, f"the request body is larger than {size_text(max_bytes)}")


async def read_json(request: web.Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The parsed body; raises :class:`Problem` (400/413/415) before anything is stored.

    ``max_bytes`` is this route's limit. The app's ``client_max_size`` is the largest
    route's limit, so the smaller ones are enforced here, chunked bodies included.
    """
    if not _is_json(request.content_type):
        raise Problem(415, "send the body as application/json")
    _check_coding(request.headers.get("Content-Encoding"))
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(max_bytes)
    timeout = request.app[SETTINGS].api_body_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            raw = await _read_at_most(request, max_bytes)
    except TimeoutError:
        abandon_body(request)  # close the connection once answered: the rest may never come
        raise Problem(
            408, f"the request body did not arrive within {timeout:g} s", type_="request-timeout"
        ) from None
    except web.RequestPayloadError as exc:
        raise _undecodable(exc, request.headers.get("Content-Encoding")) from None
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """A body's JSON as the routes see it: 400 if malformed, 422 for any NUL character."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"malformed JSON: {exc}", type_="malformed-json") from None
    if _NUL_ESCAPE in raw:
        errors = nul_errors(body)
        if errors:
            raise Problem(422, "strings must not contain NUL", errors=errors, type_="validation")
    return body


def _check_coding(header: str | None) -> None:
    """415 unless the body is plain, gzip or deflate (a list of codings is not decoded)."""
    coding = (header or "").strip().lower()
    if coding not in ("", "identity", *CONTENT_CODINGS):
        raise unsupported_coding()


def _undecodable(exc: web.RequestPayloadError, coding: str | None) -> Problem:
    """400 for a body aiohttp could not decode: not the coding it claims, or bad chunking."""
    if isinstance(exc.__cause__, ContentEncodingError):
        return Problem(
            400, f"the body is not valid {(coding or '').strip().lower()} data", type_="bad-body"
        )
    return Problem(400, "malformed request body (framing)", type_="bad-body")


async def _read_at_most(request: web.Request, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise too_large(max_bytes)
    return bytes(body)


def nul_errors(value: Any, loc: tuple[str | int, ...] = ()) -> list[FieldError]:
    """An error for every string (key or value) holding a NUL character, which no store keeps."""
    if isinstance(value, str):
        return [field_error(loc, "must not contain NUL")] if "\x00" in value else []
    out: list[FieldError] = []
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
