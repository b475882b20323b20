"""RFC 9457 problem details: every error the API answers is ``application/problem+json``.

Handlers raise :class:`Problem`; the error middleware turns it (and aiohttp's own HTTP
errors) into a response. ``errors`` lists each invalid field with a JSON pointer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus

import orjson
from aiohttp import web
from pydantic import ValidationError

from api import responses as shape
from api.schemas import TARGET_TAGS

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://notifier.dev/problems/"


class Problem(Exception):
    """An error answer: status, a short title, a detail and optionally per-field errors."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[shape.FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.type = type_

    def to_dict(self) -> shape.Problem:
        title = HTTPStatus(self.status).phrase
        slug = self.type or title.lower().replace(" ", "-").replace("'", "")
        body: shape.Problem = {
            "type": TYPE_BASE + slug,
            "title": title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self) -> web.Response:
        return problem_response(self.to_dict(), self.status, self.headers)


def problem_response(
    body: shape.Problem, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=PROBLEM_TYPE, headers=headers
    )


def field_error(loc: Iterable[str | int], message: str) -> shape.FieldError:
    """One entry of ``errors``: a JSON pointer, the location as a list, a message."""
    parts = [p for p in loc if p not in TARGET_TAGS]
    pointer = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return {"pointer": pointer or "/", "loc": parts, "message": message}


def validation_errors(
    exc: ValidationError, prefix: Sequence[str | int] = ()
) -> list[shape.FieldError]:
    """Every error of a pydantic validation, as ``errors`` entries (no input values echoed)."""
    out = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False, include_input=False):
        entry = field_error([*prefix, *err["loc"]], err["msg"].removeprefix("Value error, "))
        key = (entry["pointer"], entry["message"])
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def unprocessable(errors: list[shape.FieldError], detail: str | None = None) -> Problem:
    return Problem(
        422,
        detail or f"{len(errors)} invalid field(s); see errors",
        errors=errors,
        type_="validation",
    )
