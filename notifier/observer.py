"""What a worker's deliveries tell the outside: metrics, ``/stats`` counters and logs.

:class:`~notifier.delivery.Deliverer` calls one :class:`DeliveryObserver`'s hooks at each
step of a delivery (as dramatiq calls its middleware), so the delivery code holds only the
steps. Per delivery, nothing is logged at info (sent and retrying are ``debug``, built only
when debug is on; final failures stay ``info``, store and broker trouble ``warning``): at
thousands of pushes a second a log line costs more than the push.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from notifier import metrics
from notifier.decisions import DeliveryResult
from notifier.logging import debug_enabled, get_logger
from notifier.models import Notification, Status
from notifier.providers.base import PushResult
from notifier.store.base import ClaimMiss, Outcome

log = get_logger(__name__)


@dataclass(slots=True)
class DeliveryStats:
    """Counters since start, for the worker's ``/stats`` JSON, and one level."""

    processed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0
    duplicates_suppressed: int = 0
    lock_lost: int = 0
    # Notifications claimed (won) and not yet finished: being pushed, or their outcome
    # being written. The notifier_inflight_deliveries gauge reads it at scrape time.
    deliveries_in_progress: int = 0

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


class DeliveryObserver:
    """The worker's metrics, ``/stats`` counters and delivery logs, one hook per step.

    Subclass and override a hook to see more (call ``super()`` to keep the figures).
    """

    def __init__(self) -> None:
        self.stats = DeliveryStats()

    # -- claim ------------------------------------------------------------------------------

    def claim_failed(self, exc: BaseException) -> None:
        """The store could not be reached for a claim (the message is not acked)."""
        metrics.STORE_ERRORS.labels("claim").inc()

    def claim_missed(self, miss: ClaimMiss | None) -> None:
        """Not ours: missing, final, locked by another or not due; acked and dropped."""
        reason = miss.value if miss else "unknown"
        metrics.CLAIMS.labels("lost").inc()
        metrics.DUPLICATES_SUPPRESSED.labels(reason).inc()
        log.debug("claim_missed", reason=reason)

    def claimed(self, n: Notification, claimed_at: datetime) -> None:
        """Won: the push starts."""
        metrics.CLAIMS.labels("won").inc()
        metrics.CLAIM_LATENCY.labels(n.target.platform.value, n.lane.value).observe(
            _seconds(n.created_at, claimed_at)
        )
        self.stats.deliveries_in_progress += 1

    # -- push -------------------------------------------------------------------------------

    def provider_raised(self, n: Notification) -> None:
        """The client raised instead of answering (a bug: called in the ``except`` block)."""
        log.exception("provider_raised", provider=n.target.platform.value, notification_id=n.id)

    def pushed(self, n: Notification, result: PushResult, started: float) -> None:
        """The provider answered (or timed out); ``started`` is ``time.perf_counter()``."""
        provider = n.target.platform.value
        metrics.PROVIDER_DURATION.labels(provider).observe(time.perf_counter() - started)
        if debug_enabled():
            log.debug(
                "provider_answered",
                notification_id=n.id,
                provider=provider,
                outcome=result.outcome.value,
                status=result.provider_status,
                code=result.code,
            )

    # -- outcome ----------------------------------------------------------------------------

    def write_failed(self, exc: BaseException) -> None:
        """One outcome write failed (it is retried while the lock is held, and logged as
        ``outcome_write_failed`` by :func:`notifier.retrying.retry`)."""
        metrics.STORE_ERRORS.labels("complete").inc()

    def written(self, n: Notification, outcome: Outcome, started: float) -> None:
        """The outcome write returned (stored, or fenced off: see :meth:`lock_lost`)."""
        metrics.OUTCOME_WRITE_DURATION.labels(n.target.platform.value).observe(
            time.perf_counter() - started
        )

    def lock_lost(self, n: Notification, outcome: Outcome) -> None:
        """The outcome was not stored: another worker holds the lock now (ours expired)."""
        metrics.CLAIMS.labels("lease_lost").inc()
        log.warning("lock_lost_before_outcome", notification_id=n.id, status=outcome.status.value)

    def finished(self, n: Notification, outcome: Outcome) -> None:
        """The outcome is stored (before the follow-ups: deactivation, dead-lettering)."""
        provider = n.target.platform.value
        metrics.DELIVERIES.labels(provider, outcome.attempt_outcome.value).inc()
        if outcome.status is Status.SENT:
            metrics.DELIVERY_LATENCY.labels(provider, n.lane.value).observe(
                _seconds(n.created_at, outcome.finished_at)
            )
        elif outcome.status is Status.RETRYING:
            metrics.RETRIES_SCHEDULED.labels(provider).inc()
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

    def released(self, n: Notification) -> None:
        """A claimed delivery ended, however it ended."""
        self.stats.deliveries_in_progress -= 1

    # -- follow-ups -------------------------------------------------------------------------

    def deactivated(self, n: Notification, done: bool) -> None:
        """``deactivate_device`` returned (``done``: False when re-registered meanwhile)."""
        if done:
            metrics.TOKENS_DEACTIVATED.labels(n.target.platform.value).inc()

    def deactivate_failed(self, n: Notification) -> None:
        metrics.STORE_ERRORS.labels("deactivate_device").inc()
        log.warning("deactivate_failed", notification_id=n.id)

    def dead_lettered(self, notification_id: str, reason: str) -> None:
        metrics.DEAD_LETTERED.labels(reason.split(":", 1)[0]).inc()

    def dead_letter_failed(self, notification_id: str, reason: str) -> None:
        """The failure is stored; only its dead-letter queue entry is missing."""
        metrics.BROKER_ERRORS.labels("publish_dead").inc()
        log.warning("dead_letter_publish_failed", notification_id=notification_id, reason=reason)

    # -- per message ------------------------------------------------------------------------

    def delivered(self, result: DeliveryResult) -> None:
        """One id of a message is done (counted once the message's outcomes are durable)."""
        self.stats.count(result)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
