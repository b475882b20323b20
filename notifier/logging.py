"""structlog configuration, done once at process start (JSON by default, console on request).

Never log a whole device token (use :func:`notifier.models.token_hint`) or any secret.
"""

from __future__ import annotations

import logging
import sys

import structlog

from notifier.settings import LogFormat

_debug = True  # structlog logs every level until configured


def debug_enabled() -> bool:
    """Whether ``debug`` events are kept: a hot path asks before building one (a filtered
    ``log.debug`` call with its fields still costs about 2 µs)."""
    return _debug


def configure_logging(fmt: LogFormat = LogFormat.JSON, level: str = "info") -> None:
    global _debug
    numeric = logging.getLevelName(level.upper())
    _debug = numeric <= logging.DEBUG
    renderer: structlog.typing.Processor
    if fmt is LogFormat.CONSOLE:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        cache_logger_on_first_use=True,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format="%(name)s %(levelname)s %(message)s",
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
