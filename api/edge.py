"""The HTTP edge below the app: requests aiohttp's parser refuses, and bodies cut off.

aiohttp answers a request its parser refuses (a header line too long, too many headers, a
malformed request line) itself, before any middleware runs: text/plain, and an ERROR with
a multi-line traceback in the log. It offers no public hook for that answer
(aio-libs/aiohttp#3287), so the API's runner swaps in a request handler whose
``handle_error`` answers a problem document and logs one warning line, and whose
``log_exception`` logs a client's broken body (bad gzip, a broken chunk) as one warning
line too. Neither ever echoes the offending bytes: they may hold a key or a device token.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    ContentEncodingError,
    HttpProcessingError,
    LineTooLong,
)

from api.problems import Problem
from notifier.logging import get_logger

log = get_logger(__name__)

# aiohttp's parser limits, passed to it as handler_args so that the answers can name them.
MAX_LINE_BYTES = 8190  # the request line
MAX_FIELD_BYTES = 8190  # one header field
MAX_HEADERS = 128
CONTENT_CODINGS = ("gzip", "deflate")
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": MAX_LINE_BYTES,
    "max_field_size": MAX_FIELD_BYTES,
    "max_headers": MAX_HEADERS,
}


class BodyAbandoned(Exception):
    """Set on a request's body stream once the API answered without reading all of it
    (the body did not arrive in time): aiohttp then closes the connection at once instead
    of waiting up to its lingering time for the rest."""


def abandon_body(request: web.Request) -> None:
    request.content.set_exception(BodyAbandoned())


def unsupported_coding() -> Problem:
    """415 with ``Accept-Encoding``: only gzip and deflate, which aiohttp decodes with the
    standard library alone (br and zstd depend on optional packages)."""
    return Problem(
        415,
        f"unsupported Content-Encoding; send the body plain, {' or '.join(CONTENT_CODINGS)}",
        headers={"Accept-Encoding": ", ".join(CONTENT_CODINGS)},
        type_="unsupported-content-encoding",
    )


def parse_problem(exc: BaseException | None) -> Problem:
    """The answer to a request the parser refused, naming the limit, never the bytes."""
    if isinstance(exc, LineTooLong):
        line = exc.args[0] if exc.args else b""
        if isinstance(line, bytes | bytearray) and line[:1] == b"/":
            return Problem(414, f"the request target is longer than {MAX_LINE_BYTES} bytes")
        return Problem(431, f"a header field is longer than {MAX_FIELD_BYTES} bytes")
    if isinstance(exc, ContentEncodingError):  # a coding aiohttp cannot decode here (zstd)
        return unsupported_coding()
    if isinstance(exc, HttpProcessingError) and "too many headers" in exc.message.lower():
        return Problem(431, f"more than {MAX_HEADERS} header fields")
    return Problem(400, "malformed HTTP request")


def _client_fault(exc: BaseException | None) -> bool:
    """The error is the client's: bytes aiohttp could not parse or decode."""
    return isinstance(exc, HttpProcessingError | web.RequestPayloadError) or isinstance(
        getattr(exc, "__cause__", None), HttpProcessingError
    )


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with problem+json answers and one-line logs."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: a response is under way already
            raise ConnectionError("response already started; cannot answer the error")
        if status < 500:
            problem = parse_problem(exc)
            # A first request that is not HTTP at all (a TLS hello, a port scan) is noise.
            first_garbage = self._request_count == 1 and isinstance(exc, BadHttpMethod)
            level = log.debug if first_garbage else log.warning
            level("bad_http_request", status=problem.status, error=type(exc).__name__)
        else:
            problem = Problem(status, HTTPStatus(status).phrase.lower())
            log.error("unhandled_error", status=status, exc_info=exc)
        response = problem.response()
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, BodyAbandoned):
            return
        if isinstance(exc, BaseException) and _client_fault(exc):
            log.warning("bad_http_body", error=type(exc).__name__)
            return
        super().log_exception(*args, **kw)


class _EdgeServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are handled by :class:`EdgeRequestHandler`."""

    async def setup(self) -> None:
        await super().setup()
        server = self.server
        assert server is not None
        # aiohttp builds its web.Server inside setup(); the subclass only changes which
        # connection handler it creates (no state of its own, so the swap is safe).
        server.__class__ = _EdgeServer
