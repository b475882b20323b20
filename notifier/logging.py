"""structlog configuration, done once at process start (JSON by default, console on request).

Never log a whole device token (use :func:`notifier.models.token_hint`) or any secret.

Tracebacks are rendered WITHOUT frame locals, in every format and for stdlib loggers too:
locals hold request headers (API keys), bodies and device tokens, and made each error line
about 26 KB. The messages of database driver exceptions are withheld as well (asyncpg adds
``DETAIL: Failing row contains (...)``, PyMongo quotes the offending document): only their
codes and constraint names are kept. Until :func:`configure_logging` runs, a safe console
configuration keeping every level is in place (structlog's own default shows locals).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from notifier.settings import LogFormat

_debug = True  # every level is kept until configured

# Exceptions of these packages may quote stored values (tokens, bodies) in their messages.
_DRIVER_PACKAGES = frozenset({"asyncpg", "pymongo", "bson"})
_DRIVER_FIELDS = ("sqlstate", "constraint_name", "table_name", "column_name", "code")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def debug_enabled() -> bool:
    """Whether ``debug`` events are kept: a hot path asks before building one (a filtered
    ``log.debug`` call with its fields still costs about 2 µs)."""
    return _debug


def _chain(exc: BaseException | None, seen: set[int] | None = None) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups."""
    seen = set() if seen is None else seen
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if isinstance(exc, BaseExceptionGroup):
            for member in exc.exceptions:
                yield from _chain(member, seen)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _withheld(exc: BaseException) -> str:
    """What is said of a driver exception: its codes, never its message."""
    parts = [f"{name}={getattr(exc, name)}" for name in _DRIVER_FIELDS if getattr(exc, name, None)]
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("codeName"):
        parts.append(f"codeName={details['codeName']}")
    return " ".join(["(message withheld: it can quote stored values)", *parts])


def _scrub(stacks: list[dict[str, Any]], withheld: dict[str, str]) -> None:
    for stack in stacks:
        stack["exc_value"] = withheld.get(stack["exc_value"], stack["exc_value"])
        for member in stack.get("exceptions", ()):
            _scrub(member.get("stacks", []), withheld)


class SafeTracebacks:
    """An exc_info -> list-of-dicts transformer (as ``dict_tracebacks``): no locals, and
    driver exception messages withheld."""

    def __init__(self) -> None:
        self._extract = ExceptionDictTransformer(show_locals=False)

    def __call__(self, exc_info: ExcInfo) -> list[dict[str, Any]]:
        stacks = self._extract(exc_info)
        withheld = {
            structlog.tracebacks.safe_str(e): _withheld(e)
            for e in _chain(exc_info[1])
            if type(e).__module__.split(".")[0] in _DRIVER_PACKAGES
        }
        _scrub(stacks, withheld)
        return stacks


def _stacks_text(stacks: list[dict[str, Any]], indent: str = "") -> list[str]:
    lines: list[str] = []
    for n, stack in enumerate(stacks):
        if n:
            lines.append(indent + "which was raised while handling, or caused by:")
        lines.append(indent + "Traceback (most recent call last; locals not shown):")
        for frame in stack.get("frames", ()):
            lines.append(
                f'{indent}  File "{frame["filename"]}", line {frame["lineno"]}, in {frame["name"]}'
            )
        lines.append(f"{indent}{stack['exc_type']}: {stack['exc_value']}")
        for member in stack.get("exceptions", ()):
            lines.extend(_stacks_text(member.get("stacks", []), indent + "  "))
    return lines


def traceback_text(exc_info: ExcInfo) -> str:
    """A plain-text traceback of ``exc_info`` with what :class:`SafeTracebacks` keeps."""
    return "\n".join(_stacks_text(SafeTracebacks()(exc_info)))


def _console_exception(sio: Any, exc_info: ExcInfo) -> None:
    sio.write("\n" + traceback_text(exc_info))


class _SafeFormatter(logging.Formatter):
    """Stdlib records (aiohttp, granian, ...) with the same safe tracebacks."""

    def formatException(self, ei: Any) -> str:
        return traceback_text(ei)


def _processors(fmt: LogFormat) -> list[structlog.typing.Processor]:
    renderer: structlog.typing.Processor
    if fmt is LogFormat.CONSOLE:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=_console_exception
        )
        tracebacks: list[structlog.typing.Processor] = []  # the renderer formats exc_info
    else:
        renderer = structlog.processors.JSONRenderer()
        tracebacks = [structlog.processors.ExceptionRenderer(SafeTracebacks())]
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *tracebacks,
        renderer,
    ]


def configure_logging(fmt: LogFormat = LogFormat.JSON, level: str = "info") -> None:
    global _debug
    numeric = logging.getLevelName(level.upper())
    _debug = numeric <= logging.DEBUG
    structlog.configure(
        cache_logger_on_first_use=True,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        processors=_processors(fmt),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]


# The defaults until configure_logging (and in commands that never call it): every level,
# console, the same safe tracebacks; stdlib records that find no handler go to
# logging.lastResort, which gets the safe formatter too.
if logging.lastResort is not None:
    logging.lastResort.setFormatter(_SafeFormatter("%(name)s %(levelname)s %(message)s"))
structlog.configure(
    processors=_processors(LogFormat.CONSOLE),
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    cache_logger_on_first_use=False,
)
