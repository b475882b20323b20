"""Retrying in-process calls: one helper for every reconnect and retry loop (on tenacity).

:func:`retry` runs an async operation until it succeeds, waiting an exponential, capped,
optionally jittered delay between attempts, within an optional time or attempt budget, and
gives up at once when a stop event (the process's shutdown) is set. Each failed attempt
is logged as one line naming ``what`` failed and the error's type: never its text, which
can quote stored values or URLs with passwords (``notifier.logging``).

Delays of deliveries that the store schedules (``next_attempt_at``) are another matter:
``notifier.retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from notifier.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
ErrorTypes = type[BaseException] | tuple[type[BaseException], ...]


class Stopped(Exception):
    """The stop event was set: :func:`retry` gave up (``__cause__``: the last error, if any)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``first_seconds``, doubling, at most ``max_seconds``.

    ``jitter`` (0 to 1) takes up to that fraction off each delay at random, so that the
    many clients of a service that came back do not all retry in step.
    """

    first_seconds: float
    max_seconds: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.first_seconds <= self.max_seconds and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid backoff: {self!r}")

    def wait(self) -> Callable[[RetryCallState], float]:
        """A tenacity wait strategy."""
        exponential = wait_exponential(multiplier=self.first_seconds, max=self.max_seconds)
        if not self.jitter:
            return exponential
        jitter = self.jitter
        return lambda state: exponential(state) * (1.0 - jitter * random.random())


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    retry_on: ErrorTypes = Exception,
    stop: asyncio.Event | None = None,
    budget_seconds: float | None = None,
    max_attempts: int | None = None,
    event: str = "retrying",
    level: int = logging.WARNING,
    log_fields: Mapping[str, Any] | None = None,
    on_failure: Callable[[BaseException], None] | None = None,
) -> T:
    """``await operation()`` until it returns, retrying the errors of types ``retry_on``.

    Between attempts it waits as ``backoff`` says; no attempt starts after ``stop`` is set
    (a wait ends as soon as it is), nor after ``max_attempts``, nor when its wait would end
    past ``budget_seconds`` from the start. An attempt under way is never interrupted.

    Every failed attempt of a retried type is logged (``event``, at ``level``, with
    ``what``, the error's type name, the attempt number, ``retry_in``: the wait before the
    next one, None for the last; plus ``log_fields``) and passed to ``on_failure`` (for a
    metric, say).

    Raises :class:`Stopped` when ``stop`` ended it, the last error when the budget or the
    attempts ran out, and any other error at once. The first attempt runs without the
    retry machinery: on success the helper costs one ``await``.
    """
    if stop is not None and stop.is_set():
        raise Stopped(what)
    started = time.monotonic()
    try:
        return await operation()
    except retry_on as exc:
        first_error: BaseException = exc
    run = _Run(
        operation, what, stop, event, level, log_fields or {}, on_failure, first_error, first_error
    )
    stops: list[Callable[[RetryCallState], bool]] = []
    if stop is not None:
        stops.append(lambda _: stop.is_set())
    if max_attempts is not None:
        stops.append(stop_after_attempt(max_attempts))
    if budget_seconds is not None:  # counted from the first attempt, made above
        stops.append(stop_before_delay(budget_seconds - (time.monotonic() - started)))
    retrying = AsyncRetrying(
        sleep=run.sleep,
        stop=lambda state: any(condition(state) for condition in stops),
        wait=backoff.wait(),
        retry=retry_if_exception(lambda e: isinstance(e, retry_on) and not isinstance(e, Stopped)),
        before_sleep=lambda state: run.failed(state, state.upcoming_sleep),
        retry_error_callback=run.give_up,
    )
    return await retrying(run.attempt)  # type: ignore[no-any-return]


@dataclass(slots=True)
class _Run(Generic[T]):
    """One :func:`retry` call's state, and tenacity's callbacks."""

    operation: Callable[[], Awaitable[T]]
    what: str
    stop: asyncio.Event | None
    event: str
    level: int
    log_fields: Mapping[str, Any]
    on_failure: Callable[[BaseException], None] | None
    first_error: BaseException | None  # the attempt made before tenacity's loop
    last_error: BaseException

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    async def attempt(self) -> T:
        if self.first_error is not None:  # tenacity's first attempt is the one made before
            error, self.first_error = self.first_error, None
            raise error
        if self.stopped:
            raise Stopped(self.what) from self.last_error
        return await self.operation()

    def failed(self, state: RetryCallState, retry_in: float | None) -> None:
        error = state.outcome.exception() if state.outcome else None
        assert error is not None  # tenacity calls back on failed attempts only
        self.last_error = error
        log.log(
            self.level,
            self.event,
            what=self.what,
            error=type(error).__name__,
            attempt=state.attempt_number,
            retry_in=None if retry_in is None else round(retry_in, 3),
            **self.log_fields,
        )
        if self.on_failure is not None:
            self.on_failure(error)

    def give_up(self, state: RetryCallState) -> NoReturn:
        self.failed(state, None)
        if self.stopped:
            raise Stopped(self.what) from self.last_error
        raise self.last_error

    async def sleep(self, seconds: float) -> None:
        if self.stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):  # the stop event ends the wait
            await asyncio.wait_for(self.stop.wait(), seconds)
