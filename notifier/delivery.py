"""One delivery: claim the stored notification, push it, write the outcome (docs/design.md 1, 4).

Provider-agnostic: the worker hands in one :class:`~notifier.providers.base.Provider` per
platform. The duplicate window (provider accepted, worker died before the outcome write) is
kept as small as possible: the outcome is written right after the provider answers, before
any side effect (device deactivation, dead-lettering) and before the caller acks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from notifier import metrics
from notifier.deadlines import Deadlines
from notifier.eventloop import RunningLoop
from notifier.logging import debug_enabled, get_logger
from notifier.models import AttemptOutcome, LastError, Notification, Platform, Status, utcnow
from notifier.providers.base import Provider, PushOutcome, PushResult
from notifier.retry import next_attempt_at
from notifier.settings import Settings
from notifier.store.base import ClaimResult, NotificationStore, Outcome, StoreUnavailable

log = get_logger(__name__)

# How long an outcome write is retried (store blip) before the delivery gives up; the lock
# (NOTIFIER_LOCK_SECONDS) is held meanwhile, so nobody else pushes the notification.
COMPLETE_RETRY_SECONDS = 20.0
DEAD_LETTER_ATTEMPTS = 3


class DeliveryResult(StrEnum):
    """What one broker message led to, for the caller's counters."""

    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"  # claim missed: acked and dropped
    LOCK_LOST = "lock_lost"  # the outcome write found another holder (our lock had expired)


class DeadLetters(Protocol):
    """Where exhausted and permanently failed notification ids go (``Broker`` fits)."""

    async def publish_dead(self, notification_id: str, reason: str) -> None: ...


CompleteFn = Callable[[str, Outcome], Awaitable[bool]]
ClaimFn = Callable[[Sequence[str]], Awaitable[dict[str, ClaimResult]]]
_M = TypeVar("_M")


class _Children(Generic[_M]):
    """A metric's children by label values, looked up once (``labels()`` is not free)."""

    def __init__(self, metric: Callable[..., _M]) -> None:
        self._labels = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._labels(*values)
        return child


@dataclass(slots=True)
class DeliveryStats:
    """Counters since start, for the worker's ``/stats`` JSON."""

    processed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0
    duplicates_suppressed: int = 0
    lock_lost: int = 0
    inflight: int = 0

    def count(self, result: DeliveryResult) -> None:
        self.processed += 1
        if result is DeliveryResult.SENT:
            self.sent += 1
        elif result is DeliveryResult.RETRYING:
            self.retried += 1
        elif result is DeliveryResult.FAILED:
            self.failed += 1
        elif result is DeliveryResult.EXPIRED:
            self.expired += 1
        elif result is DeliveryResult.DUPLICATE:
            self.duplicates_suppressed += 1
        else:
            self.lock_lost += 1


@dataclass(frozen=True, slots=True)
class _Decision:
    outcome: Outcome
    metric_outcome: str  # DELIVERIES outcome label
    deactivate: bool = False
    token_invalid_since: datetime | None = None  # APNs 410 timestamp
    dead_letter_reason: str | None = None  # "max_attempts" or "permanent:<code>"


_RESULT_BY_STATUS = {
    Status.SENT: DeliveryResult.SENT,
    Status.RETRYING: DeliveryResult.RETRYING,
    Status.FAILED: DeliveryResult.FAILED,
    Status.EXPIRED: DeliveryResult.EXPIRED,
}


class Deliverer:
    """Runs deliveries for one worker; safe to call :meth:`deliver_many` from many tasks."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: NotificationStore,
        providers: Mapping[Platform, Provider],
        dead_letters: DeadLetters,
        worker_id: str,
        complete: CompleteFn | None = None,
        claim: ClaimFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.dead_letters = dead_letters
        self.worker_id = worker_id
        self.stats = DeliveryStats()
        self._complete = complete or self._complete_direct
        self._claim = claim or self._claim_direct
        self._rng = rng
        # A provider call never outlives this, whatever the client's own timeouts do.
        self._push_timeout = settings.provider_timeout_seconds * 2 + 5
        self._deadlines = Deadlines()
        self._loop = RunningLoop()
        self._claims = _Children(metrics.CLAIMS.labels)
        self._suppressed = _Children(metrics.DUPLICATES_SUPPRESSED.labels)
        self._claim_latency = _Children(metrics.CLAIM_LATENCY.labels)
        self._provider_duration = _Children(metrics.PROVIDER_DURATION.labels)
        self._outcome_write = _Children(metrics.OUTCOME_WRITE_DURATION.labels)
        self._deliveries = _Children(metrics.DELIVERIES.labels)
        self._delivery_latency = _Children(metrics.DELIVERY_LATENCY.labels)
        self._retries = _Children(metrics.RETRIES_SCHEDULED.labels)

    async def _complete_direct(self, notification_id: str, outcome: Outcome) -> bool:
        return await self.store.complete(notification_id, self.worker_id, outcome)

    async def _claim_direct(self, ids: Sequence[str]) -> dict[str, ClaimResult]:
        return await self.store.claim_many(
            ids, self.worker_id, utcnow(), self.settings.lock_seconds
        )

    async def deliver(self, notification_id: str) -> DeliveryResult:
        """:meth:`deliver_many` for one id."""
        (result,) = await self.deliver_many([notification_id])
        return result

    async def deliver_many(
        self, ids: Sequence[str], *, each_done: Callable[[], None] | None = None
    ) -> list[DeliveryResult]:
        """Claim the ids in one go, push the won ones concurrently, record every outcome.

        Returns (results in input order) only once every outcome is durable: the caller acks
        afterwards. ``each_done`` is called as each delivery ends (outcome durable, claim
        missed, or failed), so the caller can start other work meanwhile. Raises
        :class:`StoreUnavailable` when the claim or an outcome write cannot reach the store
        (after the other deliveries finished): the caller must not
        ack (the message is redelivered, and its redelivery re-claims only what is still
        open; a notification we hold stays locked until the sweeper recovers it).
        """
        try:
            claims = await self._claim(ids)
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("claim").inc()
            raise
        if len(ids) == 1:
            outcomes: list[DeliveryResult | BaseException] = [
                await self._run(claims[ids[0]], each_done)
            ]
        else:
            # tasks made here: gather() would look the running loop up once per coroutine
            loop = self._loop.get()
            tasks = [loop.create_task(self._run(claims[i], each_done)) for i in ids]
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        results: list[DeliveryResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            self.stats.count(outcome)
            results.append(outcome)
        return results

    async def _run(
        self, claim: ClaimResult, each_done: Callable[[], None] | None
    ) -> DeliveryResult:
        try:
            return await self._run_claimed(claim)
        finally:
            if each_done is not None:
                each_done()

    async def _run_claimed(self, claim: ClaimResult) -> DeliveryResult:
        notification = claim.notification
        if notification is None:
            reason = claim.miss.value if claim.miss else "unknown"
            self._claims("lost").inc()
            self._suppressed(reason).inc()
            log.debug("claim_missed", reason=reason)
            return DeliveryResult.DUPLICATE
        now = notification.locked_at or utcnow()  # the claim's time
        provider = notification.target.platform.value
        self._claims("won").inc()
        self._claim_latency(provider).observe(_seconds(notification.created_at, now))
        self.stats.inflight += 1  # the INFLIGHT gauge reads it (workers.main)
        try:
            # logs name the notification explicitly: binding context vars per delivery cost
            # about 5 % of a worker's CPU
            decision = await self._attempt(notification, now)
            return await self._finish(notification, decision)
        finally:
            self.stats.inflight -= 1

    async def _attempt(self, notification: Notification, now: datetime) -> _Decision:
        expires_at = notification.expires_at
        if expires_at is not None and expires_at < now:
            error = LastError("ttl_expired", "ttl_seconds passed before delivery")
            outcome = Outcome(Status.EXPIRED, AttemptOutcome.EXPIRED, now, last_error=error)
            return _Decision(outcome, "expired")
        result = await self._push(notification)
        return self._decide(notification, result, utcnow())

    async def _push(self, notification: Notification) -> PushResult:
        platform = notification.target.platform
        provider = self.providers.get(platform)
        if provider is None:
            return PushResult(
                PushOutcome.PERMANENT,
                code="provider_not_configured",
                message=f"no {platform.value} provider is configured in this worker",
            )
        started = time.perf_counter()
        try:
            result = await self._deadlines.bound(provider.send(notification), self._push_timeout)
        except TimeoutError:
            result = PushResult(PushOutcome.RETRY, code="timeout", message="provider timed out")
        except Exception as exc:  # a client bug must not wedge the message: retry, then DLQ
            log.exception(
                "provider_raised", provider=platform.value, notification_id=notification.id
            )
            result = PushResult(
                PushOutcome.RETRY, code="provider_error", message=type(exc).__name__
            )
        self._provider_duration(platform.value).observe(time.perf_counter() - started)
        if debug_enabled():
            log.debug(
                "provider_answered",
                notification_id=notification.id,
                provider=platform.value,
                outcome=result.outcome.value,
                status=result.provider_status,
                code=result.code,
            )
        return result

    def _decide(self, n: Notification, result: PushResult, now: datetime) -> _Decision:
        """Map a provider answer to the stored outcome and the follow-up actions."""
        status = result.provider_status
        if result.outcome is PushOutcome.SENT:
            outcome = Outcome(
                Status.SENT,
                AttemptOutcome.SENT,
                now,
                provider_status=status,
                provider_message_id=result.message_id,
            )
            return _Decision(outcome, "sent")
        error = LastError(
            result.code or result.outcome.value, result.message or result.outcome.value, status
        )
        if result.outcome is PushOutcome.TOKEN_DEAD:
            outcome = Outcome(
                Status.FAILED, AttemptOutcome.TOKEN_DEAD, now, status, last_error=error
            )
            return _Decision(
                outcome,
                "token_dead",
                deactivate=True,
                token_invalid_since=result.token_invalid_since,
            )
        if result.outcome is PushOutcome.PERMANENT:
            outcome = Outcome(
                Status.FAILED, AttemptOutcome.PERMANENT, now, status, last_error=error
            )
            return _Decision(outcome, "permanent", dead_letter_reason=f"permanent:{error.code}")
        if n.attempts >= self.settings.max_attempts:
            outcome = Outcome(Status.FAILED, AttemptOutcome.RETRY, now, status, last_error=error)
            return _Decision(outcome, "retry", dead_letter_reason="max_attempts")
        when = next_attempt_at(
            now, n.attempts, self.settings, result.retry_after_seconds, self._rng
        )
        expires_at = n.expires_at
        if expires_at is not None and when > expires_at:
            outcome = Outcome(Status.EXPIRED, AttemptOutcome.RETRY, now, status, last_error=error)
            return _Decision(outcome, "retry")
        outcome = Outcome(
            Status.RETRYING,
            AttemptOutcome.RETRY,
            now,
            status,
            next_attempt_at=when,
            last_error=error,
        )
        return _Decision(outcome, "retry")

    async def _finish(self, n: Notification, decision: _Decision) -> DeliveryResult:
        outcome = decision.outcome
        provider = n.target.platform.value
        started = time.perf_counter()
        written = await self._write_outcome(n.id, outcome)
        self._outcome_write(provider).observe(time.perf_counter() - started)
        if not written:
            self._claims("lease_lost").inc()
            log.warning(
                "lock_lost_before_outcome", notification_id=n.id, status=outcome.status.value
            )
            return DeliveryResult.LOCK_LOST
        self._deliveries(provider, decision.metric_outcome).inc()
        if outcome.status is Status.SENT:
            self._delivery_latency(provider).observe(_seconds(n.created_at, outcome.finished_at))
        elif outcome.status is Status.RETRYING:
            self._retries(provider).inc()
        # sent and retrying are counted by metrics (and kept in the history); logging each
        # would cost more than the push. Final failures stay visible at info.
        final_failure = outcome.status in (Status.FAILED, Status.EXPIRED)
        if final_failure or debug_enabled():
            log_event = log.info if final_failure else log.debug
            log_event(
                "delivery_finished",
                notification_id=n.id,
                status=outcome.status.value,
                attempt=n.attempts,
                provider=provider,
                provider_status=outcome.provider_status,
                code=outcome.last_error.code if outcome.last_error else None,
            )
        if decision.deactivate:
            await self._deactivate(n, outcome, decision.token_invalid_since)
        if decision.dead_letter_reason is not None:
            await self._dead_letter(n.id, decision.dead_letter_reason)
        return _RESULT_BY_STATUS[outcome.status]

    async def _write_outcome(self, notification_id: str, outcome: Outcome) -> bool:
        # Any failure is retried, not only StoreUnavailable: a transient database error
        # (a deadlock with a concurrent multi-row update, say) must not strand the lock.
        # The first try goes without the retry machinery (it costs more than the write).
        try:
            return await self._complete(notification_id, outcome)
        except Exception as exc:
            metrics.STORE_ERRORS.labels("complete").inc()
            log.warning(
                "outcome_write_failed", notification_id=notification_id, error=type(exc).__name__
            )
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            stop=stop_after_delay(COMPLETE_RETRY_SECONDS),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await self._complete(notification_id, outcome)
                except Exception as exc:
                    metrics.STORE_ERRORS.labels("complete").inc()
                    log.warning(
                        "outcome_write_failed",
                        notification_id=notification_id,
                        error=type(exc).__name__,
                    )
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _deactivate(self, n: Notification, outcome: Outcome, since: datetime | None) -> None:
        code = outcome.last_error.code if outcome.last_error else "token_dead"
        try:
            done = await self.store.deactivate_device(
                n.app, n.target.token, code, utcnow(), unless_registered_after=since
            )
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("deactivate_device").inc()
            log.warning("deactivate_failed", notification_id=n.id)
            return
        if done:
            metrics.TOKENS_DEACTIVATED.labels(n.target.platform.value).inc()

    async def _dead_letter(self, notification_id: str, reason: str) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(DEAD_LETTER_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self.dead_letters.publish_dead(notification_id, reason)
        except Exception:  # the failure is already stored; only the DLQ entry is missing
            metrics.BROKER_ERRORS.labels("publish_dead").inc()
            log.warning(
                "dead_letter_publish_failed", notification_id=notification_id, reason=reason
            )
            return
        metrics.DEAD_LETTERED.labels(reason.split(":", 1)[0]).inc()


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
