"""One delivery: claim the stored notification, push it, write the outcome (docs/design.md 1, 4).

Provider-agnostic: the worker hands in a
:class:`~notifier.providers.registry.ProviderRegistry` (each notification's app credential,
else the environment's client of its platform). The duplicate window (provider accepted,
worker died before the outcome write) is kept as small as possible: the outcome is written
right after the provider answers, before any side effect (device deactivation,
dead-lettering) and before the caller acks.

What an answer means is :mod:`notifier.decisions`'s; what the outside sees (metrics,
``/stats``, logs) is :mod:`notifier.observer`'s; this module carries out the steps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from notifier.deadlines import Deadlines
from notifier.decisions import (
    RESULT_BY_STATUS,
    Decision,
    DeliveryResult,
    decide,
    decide_before_push,
)
from notifier.eventloop import RunningLoop
from notifier.models import Lane, Notification, Platform, utcnow
from notifier.observer import DeliveryObserver, DeliveryStats
from notifier.providers.base import Provider, PushOutcome, PushResult
from notifier.providers.registry import ProviderRegistry
from notifier.retrying import Backoff, retry
from notifier.settings import Settings
from notifier.store.base import ClaimResult, Outcome, StoreUnavailable

__all__ = ["DeadLetters", "Deliverer", "DeliveryResult", "DeliveryStore"]

# How long an outcome write is retried (store blip) before the delivery gives up; the lock
# (NOTIFIER_LOCK_SECONDS) is held meanwhile, so nobody else pushes the notification.
COMPLETE_RETRY_SECONDS = 20.0
COMPLETE_BACKOFF = Backoff(0.1, 2.0)
DEAD_LETTER_ATTEMPTS = 3
DEAD_LETTER_BACKOFF = Backoff(0.2, 2.0)


class DeadLetters(Protocol):
    """Where exhausted and permanently failed notification ids go (``Broker`` fits)."""

    async def publish_dead(
        self, notification_id: str, reason: str, lane: Lane = Lane.TRANSACTIONAL
    ) -> None: ...


class DeliveryStore(Protocol):
    """The store as one worker's deliveries use it, claims and outcomes made for that worker
    (:class:`~notifier.store.batching.BatchedStore` fits)."""

    async def claim(self, ids: Sequence[str]) -> dict[str, ClaimResult]: ...

    async def complete(self, notification_id: str, outcome: Outcome) -> bool: ...

    async def deactivate_device(
        self,
        app: str,
        token: str,
        reason: str,
        now: datetime,
        *,
        unless_registered_after: datetime | None = None,
    ) -> bool: ...


class Deliverer:
    """Runs deliveries for one worker; safe to call :meth:`deliver_many` from many tasks."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: DeliveryStore,
        providers: ProviderRegistry | Mapping[Platform, Provider],
        dead_letters: DeadLetters,
        observer: DeliveryObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        # the registry picks each notification's client: its app's credential or the default
        self.providers = (
            providers
            if isinstance(providers, ProviderRegistry)
            else ProviderRegistry.fixed(settings, providers)
        )
        self.dead_letters = dead_letters
        self.observer = observer or DeliveryObserver()
        self._rng = rng
        # A provider call never outlives this, whatever the client's own timeouts do.
        self._push_timeout = settings.provider_timeout_seconds * 2 + 5
        self._deadlines = Deadlines()
        self._loop = RunningLoop()

    @property
    def stats(self) -> DeliveryStats:
        """The observer's counters (``/stats``)."""
        return self.observer.stats

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
            claims = await self.store.claim(ids)
        except StoreUnavailable as exc:
            self.observer.claim_failed(exc)
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
            self.observer.delivered(outcome)
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
            self.observer.claim_missed(claim.miss)
            return DeliveryResult.DUPLICATE
        now = notification.locked_at or utcnow()  # the claim's time
        self.observer.claimed(notification, now)
        try:
            # logs name the notification explicitly: binding context vars per delivery cost
            # about 5 % of a worker's CPU
            decision = decide_before_push(notification, now)
            if decision is None:
                result = await self._push(notification)
                decision = decide(notification, result, utcnow(), self.settings, self._rng)
            return await self._finish(notification, decision)
        finally:
            self.observer.released(notification)

    async def _push(self, notification: Notification) -> PushResult:
        started = time.perf_counter()
        try:
            result = await self._deadlines.bound(
                self.providers.send(notification), self._push_timeout
            )
        except TimeoutError:
            result = PushResult(PushOutcome.RETRY, code="timeout", message="provider timed out")
        except Exception as exc:  # a client bug must not wedge the message: retry, then DLQ
            self.observer.provider_raised(notification)
            result = PushResult(
                PushOutcome.RETRY, code="provider_error", message=type(exc).__name__
            )
        self.observer.pushed(notification, result, started)
        return result

    async def _finish(self, n: Notification, decision: Decision) -> DeliveryResult:
        outcome = decision.outcome
        started = time.perf_counter()
        written = await self._write_outcome(n.id, outcome)
        self.observer.written(n, outcome, started)
        if not written:
            self.observer.lock_lost(n, outcome)
            return DeliveryResult.LOCK_LOST
        self.observer.finished(n, outcome)
        if decision.deactivate:
            await self._deactivate(n, outcome, decision.token_invalid_since)
        if decision.dead_letter_reason is not None:
            await self._dead_letter(n, decision.dead_letter_reason)
        return RESULT_BY_STATUS[outcome.status]

    async def _write_outcome(self, notification_id: str, outcome: Outcome) -> bool:
        # Any failure is retried, not only StoreUnavailable: a transient database error
        # (a deadlock with a concurrent multi-row update, say) must not strand the lock.
        return await retry(
            lambda: self.store.complete(notification_id, outcome),
            what="outcome write",
            backoff=COMPLETE_BACKOFF,
            budget_seconds=COMPLETE_RETRY_SECONDS,
            event="outcome_write_failed",
            log_fields={"notification_id": notification_id},
            on_failure=self.observer.write_failed,
        )

    async def _deactivate(self, n: Notification, outcome: Outcome, since: datetime | None) -> None:
        code = outcome.last_error.code if outcome.last_error else "token_dead"
        try:
            done = await self.store.deactivate_device(
                n.app, n.target.token, code, utcnow(), unless_registered_after=since
            )
        except StoreUnavailable:
            self.observer.deactivate_failed(n)
            return
        self.observer.deactivated(n, done)

    async def _dead_letter(self, n: Notification, reason: str) -> None:
        notification_id = n.id
        try:
            await retry(
                lambda: self.dead_letters.publish_dead(notification_id, reason, n.lane),
                what="dead letter",
                backoff=DEAD_LETTER_BACKOFF,
                max_attempts=DEAD_LETTER_ATTEMPTS,
                event="dead_letter_retry",
                log_fields={"notification_id": notification_id},
            )
        except Exception:  # the failure is already stored; only the DLQ entry is missing
            self.observer.dead_letter_failed(notification_id, reason)
            return
        self.observer.dead_lettered(notification_id, reason)
