"""Prometheus metrics: every name the API and the workers export, in one place.

Names follow Prometheus conventions (``notifier_`` prefix, base units, ``_total`` counters).
Labels are bounded enumerations: never a token, user id or notification id.
The API and the worker each expose their own registry, so neither exports the other's
series. Dashboards and alerts (``grafana/``, ``prometheus/``) use only these names; a test
holds them to it.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import (
    GCCollector as _GCCollector,
)
from prometheus_client import (
    PlatformCollector as _PlatformCollector,
)
from prometheus_client import (
    ProcessCollector as _ProcessCollector,
)

from notifier.hotmetrics import LocalCounter, LocalHistogram

API_REGISTRY = CollectorRegistry()
WORKER_REGISTRY = CollectorRegistry()
for _registry in (API_REGISTRY, WORKER_REGISTRY):
    _ProcessCollector(registry=_registry)
    _PlatformCollector(registry=_registry)
    _GCCollector(registry=_registry)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Provider call: .01 s .. 30 s; end to end: 10 ms .. 1 h (bucket edges at SLO thresholds).
PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.28, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# store writes: milliseconds when well, up to the 20 s an outcome write is retried
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# -- API ------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "notifier_http_requests",
    "API requests answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=API_REGISTRY,
)
HTTP_DURATION = Histogram(
    "notifier_http_request_duration_seconds",
    "API request handling time, by route template and method.",
    ["route", "method"],
    buckets=HTTP_BUCKETS,
    registry=API_REGISTRY,
)
ACCEPTED = Counter(
    "notifier_notifications_accepted",
    "Notifications accepted (stored) by the API, by platform, priority and lane.",
    ["platform", "priority", "lane"],
    registry=API_REGISTRY,
)
API_PUBLISH_FAILURES = Counter(
    "notifier_api_publish_failures",
    "Stored notifications whose publish failed at accept time (the sweeper publishes them).",
    registry=API_REGISTRY,
)
RATE_LIMITED = Counter(
    "notifier_api_rate_limited",
    "Requests refused with 429 by the per-key rate limit.",
    registry=API_REGISTRY,
)

# -- worker -----------------------------------------------------------------------------------
# Updated on every push: kept in plain numbers (notifier.hotmetrics), the rest in
# prometheus_client's own metrics.
MESSAGES_CONSUMED = LocalCounter(
    "notifier_messages_consumed",
    "Broker messages received by the worker.",
    (),
    WORKER_REGISTRY,
)
DELIVERIES = LocalCounter(
    "notifier_deliveries",
    "Push attempts finished, by provider and outcome "
    "(sent, retry, token_dead, permanent, expired).",
    ["provider", "outcome"],
    WORKER_REGISTRY,
)
PROVIDER_RESPONSES = LocalCounter(
    "notifier_provider_responses",
    "Provider answers by provider, HTTP status class and enumerated reason code.",
    ["provider", "status_class", "code"],
    WORKER_REGISTRY,
)
PROVIDER_DURATION = LocalHistogram(
    "notifier_provider_request_duration_seconds",
    "Claimed to provider answered: one push request, by provider.",
    ["provider"],
    WORKER_REGISTRY,
    buckets=PROVIDER_BUCKETS,
)
OUTCOME_WRITE_DURATION = LocalHistogram(
    "notifier_outcome_write_duration_seconds",
    "Provider answered to outcome stored: the crash window (a worker dying in it leaves a "
    "push that may be sent again), by provider.",
    ["provider"],
    WORKER_REGISTRY,
    buckets=WRITE_BUCKETS,
)
CLAIM_LATENCY = LocalHistogram(
    "notifier_claim_latency_seconds",
    "Accepted (created) to claimed by a worker, by provider and lane.",
    ["provider", "lane"],
    WORKER_REGISTRY,
    buckets=END_TO_END_BUCKETS,
)
DELIVERY_LATENCY = LocalHistogram(
    "notifier_delivery_latency_seconds",
    "Accepted (created) to sent, end to end, by provider and lane.",
    ["provider", "lane"],
    WORKER_REGISTRY,
    buckets=END_TO_END_BUCKETS,
)
CLAIMS = LocalCounter(
    "notifier_claims",
    "Claim attempts on stored documents, by result (won, lost).",
    ["result"],
    WORKER_REGISTRY,
)
DUPLICATES_SUPPRESSED = LocalCounter(
    "notifier_duplicates_suppressed",
    "Messages acked and dropped because the document was missing, final, locked or not due.",
    ["reason"],
    WORKER_REGISTRY,
)
RETRIES_SCHEDULED = LocalCounter(
    "notifier_retries_scheduled",
    "Attempts that ended in a scheduled retry, by provider.",
    ["provider"],
    WORKER_REGISTRY,
)
DEAD_LETTERED = Counter(
    "notifier_dead_lettered",
    "Notifications sent to the dead-letter queue, by reason.",
    ["reason"],
    registry=WORKER_REGISTRY,
)
TOKENS_DEACTIVATED = Counter(
    "notifier_tokens_deactivated",
    "Devices deactivated after a dead-token answer, by provider.",
    ["provider"],
    registry=WORKER_REGISTRY,
)
UNKNOWN_OUTCOMES = Counter(
    "notifier_unknown_outcomes",
    "Attempts found started but never finished after a worker died (possible duplicates).",
    registry=WORKER_REGISTRY,
)
SWEEPER_REPUBLISHED = Counter(
    "notifier_sweeper_republished",
    "Documents republished by the sweeper, by reason (due, expired_lock).",
    ["reason"],
    registry=WORKER_REGISTRY,
)
INFLIGHT = Gauge(
    "notifier_inflight_deliveries",
    "Deliveries in progress in this worker.",
    registry=WORKER_REGISTRY,
)
STORE_ERRORS = Counter(
    "notifier_store_errors",
    "Store operations that failed, by operation.",
    ["operation"],
    registry=WORKER_REGISTRY,
)
BROKER_ERRORS = Counter(
    "notifier_broker_errors",
    "Broker operations that failed, by operation.",
    ["operation"],
    registry=WORKER_REGISTRY,
)
AUTH_TOKEN_REFRESHES = Counter(
    "notifier_auth_token_refreshes",
    "Provider auth tokens minted or fetched (FCM OAuth2, APNs JWT), by provider.",
    ["provider"],
    registry=WORKER_REGISTRY,
)
NOTIFICATIONS_BY_STATUS = Gauge(
    "notifier_notifications",
    "Notifications not yet final (the backlog: pending, scheduled, retrying) by status, "
    "as last counted by this worker.",
    ["status"],
    registry=WORKER_REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "notifier_queue_messages",
    "Messages ready in a broker queue (each lane's work queues and dead-letter queue), "
    "by queue and lane.",
    ["queue", "lane"],
    registry=WORKER_REGISTRY,
)
QUEUE_WAIT = Gauge(
    "notifier_queue_wait_seconds",
    "How long the last message this worker took from the lane had waited in its queue "
    "(publish to receipt); 0 once the lane's queues are empty. The lane's backlog age.",
    ["lane"],
    registry=WORKER_REGISTRY,
)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)


# -- credentials (issue 16) -----------------------------------------------------------------
# ``app`` is the app whose own credential it is, or ``(environment)`` for the environment's
# default; bounded by the apps that store credentials, not by traffic.
CREDENTIAL_HEALTHY = Gauge(
    "notifier_credential_healthy",
    "1 while this worker's client of the credential works, 0 once the provider refused it "
    "(FCM 401/403, THIRD_PARTY_AUTH_ERROR, an OAuth2 token refusal, APNs 403 "
    "InvalidProviderToken/ExpiredProviderToken); by app and provider.",
    ["app", "provider"],
    registry=WORKER_REGISTRY,
)
CREDENTIAL_LAST_SUCCESS = Gauge(
    "notifier_credential_last_success_timestamp_seconds",
    "Unix time of the last push the provider accepted under the credential, by app and "
    "provider (absent until the first one).",
    ["app", "provider"],
    registry=WORKER_REGISTRY,
)
