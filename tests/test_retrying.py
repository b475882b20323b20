"""The one retry helper (notifier/retrying.py): retries until success, stops on shutdown
at once, keeps to its budget, backs off up to a cap, and lets other errors through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from notifier.retrying import Backoff, Stopped, retry

TINY = Backoff(first_seconds=0.001, max_seconds=0.004)
SECRET = "postgresql://notifier:hunter2@db/notifier"


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns ``result``."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError(SECRET)
        self.calls = 0
        self.started: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        self.started.append(time.monotonic())
        if self.calls <= self.failures:
            raise self.error
        return "done"


def retry_lines(
    logs: Sequence[MutableMapping[str, Any]], event: str = "retrying"
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_retries_until_the_operation_succeeds_logging_each_failure_without_its_text() -> None:
    op = Flaky(failures=3)
    failures: list[BaseException] = []
    with capture_logs() as logs:
        result = await retry(
            op,
            what="store",
            backoff=TINY,
            retry_on=ConnectionError,
            event="connect_failed",
            log_fields={"kind": "postgresql"},
            on_failure=failures.append,
        )
    assert result == "done"
    assert op.calls == 4
    lines = retry_lines(logs, "connect_failed")
    assert [line["attempt"] for line in lines] == [1, 2, 3]
    assert all(line["what"] == "store" and line["kind"] == "postgresql" for line in lines)
    assert all(line["error"] == "ConnectionError" for line in lines)
    assert all(line["log_level"] == "warning" for line in lines)
    assert SECRET not in repr(logs) and "hunter2" not in repr(logs)
    assert len(failures) == 3


async def test_a_first_success_logs_nothing() -> None:
    with capture_logs() as logs:
        assert await retry(Flaky(0), what="x", backoff=TINY) == "done"
    assert logs == []


async def test_the_stop_event_ends_a_long_wait_at_once_and_no_attempt_follows() -> None:
    stop = asyncio.Event()
    op = Flaky(failures=10**6)
    hour = Backoff(first_seconds=3600, max_seconds=3600)

    async def stop_after_first_failure() -> None:
        while op.calls < 1:
            await asyncio.sleep(0.001)
        stop.set()

    setter = asyncio.create_task(stop_after_first_failure())
    with capture_logs() as logs:
        async with asyncio.timeout(10):  # the wait would be an hour
            with pytest.raises(Stopped) as raised:
                await retry(op, what="broker", backoff=hour, stop=stop)
    await setter
    assert op.calls == 1
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert [line["retry_in"] for line in retry_lines(logs)] == [3600]


async def test_a_failure_that_finds_the_stop_event_set_gives_up_without_waiting() -> None:
    stop = asyncio.Event()

    async def fails_during_shutdown() -> None:
        stop.set()
        raise ConnectionError(SECRET)

    with capture_logs() as logs:
        async with asyncio.timeout(10):
            with pytest.raises(Stopped) as raised:
                await retry(fails_during_shutdown, what="broker", backoff=TINY, stop=stop)
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert [line["retry_in"] for line in retry_lines(logs)] == [None]  # the last failure


async def test_nothing_is_attempted_once_the_stop_event_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    op = Flaky(failures=0)
    with pytest.raises(Stopped):
        await retry(op, what="store", backoff=TINY, stop=stop)
    assert op.calls == 0


async def test_gives_up_with_the_last_error_when_no_wait_fits_in_the_budget() -> None:
    op = Flaky(failures=10**6)
    budget = 0.3
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(ConnectionError):
        await retry(
            op,
            what="delivery",
            backoff=Backoff(first_seconds=0.02, max_seconds=0.05),
            budget_seconds=budget,
        )
    # 0.02 + 0.04 + 0.05 * n: about seven attempts fit (fewer when the machine is busy)
    assert 2 <= op.calls <= 9
    # no attempt was scheduled past the budget: each wait is checked before it starts
    lines = retry_lines(logs)
    assert lines[-1]["retry_in"] is None
    waited = sum(line["retry_in"] for line in lines[:-1])
    assert waited < budget
    assert op.started[-1] - started < budget + 0.25  # scheduled in budget, late only by load


async def test_gives_up_with_the_last_error_after_max_attempts() -> None:
    op = Flaky(failures=10**6)
    with pytest.raises(ConnectionError):
        await retry(op, what="dead letter", backoff=TINY, max_attempts=3)
    assert op.calls == 3


async def test_waits_double_up_to_the_cap() -> None:
    with capture_logs() as logs:
        await retry(Flaky(failures=5), what="x", backoff=TINY)
    assert [line["retry_in"] for line in retry_lines(logs)] == [0.001, 0.002, 0.004, 0.004, 0.004]


async def test_jitter_takes_at_most_its_fraction_off_each_wait() -> None:
    backoff = Backoff(first_seconds=0.002, max_seconds=0.008, jitter=0.5)
    with capture_logs() as logs:
        await retry(Flaky(failures=40), what="x", backoff=backoff)
    waits = [line["retry_in"] for line in retry_lines(logs)]
    ceilings = [0.002, 0.004] + [0.008] * 38
    assert all(c / 2 - 0.001 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len(set(waits[2:])) > 1  # jittered, not all at the cap


async def test_errors_not_retried_propagate_at_once() -> None:
    op = Flaky(failures=1, error=ValueError("bad input"))
    with capture_logs() as logs, pytest.raises(ValueError):
        await retry(op, what="store", backoff=TINY, retry_on=ConnectionError)
    assert op.calls == 1
    assert logs == []


async def test_an_error_not_retried_on_a_later_attempt_propagates() -> None:
    calls = 0

    async def then_a_bug() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError() if calls == 1 else KeyError("bug")

    with pytest.raises(KeyError):
        await retry(then_a_bug, what="store", backoff=TINY, retry_on=(ConnectionError, OSError))
    assert calls == 2


async def test_failures_can_be_logged_at_debug() -> None:
    with capture_logs() as logs:
        await retry(Flaky(1), what="x", backoff=TINY, level=logging.DEBUG)
    assert [line["log_level"] for line in retry_lines(logs)] == ["debug"]


@pytest.mark.parametrize("first, cap, jitter", [(0, 1, 0), (2, 1, 0), (1, 2, -0.1), (1, 2, 1.5)])
def test_a_backoff_that_cannot_work_is_refused(first: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(first_seconds=first, max_seconds=cap, jitter=jitter)
