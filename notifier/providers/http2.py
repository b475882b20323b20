"""The HTTP/2 transport every provider client shares: pyreqwest (Rust reqwest + hyper + rustls).

Chosen by measurement (docs/providers.md): its native core multiplexes thousands of streams
over one TLS connection at several times the rate of a pure-Python h2 stack. Trust is set
explicitly on each client: the system roots plus ``NOTIFIER_PROVIDER_CA_FILE`` added beside
them, so process-wide variables (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``) can never drop
our CA. Transport failures become :class:`TransportFailure` with a sanitised text: never a
URL (an APNs URL holds the device token) and never a header value.

Connections: hyper keeps one HTTP/2 connection per client and honours the server's
``SETTINGS_MAX_CONCURRENT_STREAMS`` by queueing the streams beyond it (RFC 9113 9.1: it
never opens a second connection by itself). Pushes in flight are rate x round-trip time
(1,800/s at 50 ms: 90), and Google's front ends advertise 100 streams (APNs 1000, but 1
until a connection's first push is authorized): so a transport opens another connection
(another pyreqwest client) when each of its connections already carries
``streams_per_connection`` requests, up to ``max_connections``; requests go to the
connection with the fewest in flight (docs/operations.md, "Sizing for provider latency").
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Literal

from pyreqwest import exceptions as rq_errors
from pyreqwest.client import Client, ClientBuilder

from notifier.metrics import PROVIDER_RESPONSES
from notifier.providers.base import PushResult

FailureKind = Literal["timeout", "connection", "tls"]
# words of a TLS failure in rustls'/hyper's causes: the provider's certificate is not trusted,
# expired or for another name, or the handshake failed (a credential's health: issue 16)
_TLS_WORDS = ("certificate", "tls", "handshake")

_CONNECT_TIMEOUT = timedelta(seconds=5)
_IDLE_TIMEOUT = timedelta(minutes=10)
_PING_INTERVAL = timedelta(seconds=30)


class TransportFailure(Exception):
    """No HTTP answer came: ``kind`` is ``timeout``, ``tls`` (the handshake or the provider's
    certificate failed) or ``connection``; the text is safe to log."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: FailureKind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What a provider client needs of an answer: status, the headers it asked for, the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """How to reach a provider: whose certificates to trust, how long to wait."""

    timeout_seconds: float
    ca_file: Path | None = None
    http2_only: bool = False  # APNs: HTTP/2 by ALPN only; FCM and OAuth: h2 or HTTP/1.1
    # NOTIFIER_PROVIDER_STREAMS_PER_CONNECTION, NOTIFIER_PROVIDER_CONNECTIONS
    streams_per_connection: int = 100
    max_connections: int = 4


class _Connection:
    """One pyreqwest client (one HTTP/2 connection once used) and its requests in flight."""

    __slots__ = ("client", "inflight")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.inflight = 0


class HttpTransport:
    """Keep-alive HTTP/2 connections, opened as the load needs; safe from many tasks."""

    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        self._timeout = timedelta(seconds=config.timeout_seconds)
        self._streams = max(1, config.streams_per_connection)
        self._max_connections = max(1, config.max_connections)
        self._ca_pem = config.ca_file.read_bytes() if config.ca_file is not None else None
        self._connections = [_Connection(self._build())]

    @property
    def connections(self) -> int:
        """Connections (clients) opened so far."""
        return len(self._connections)

    def _build(self) -> Client:
        config = self._config
        builder = (
            ClientBuilder()
            .timeout(self._timeout)
            .connect_timeout(min(_CONNECT_TIMEOUT, self._timeout))
            .pool_idle_timeout(_IDLE_TIMEOUT)
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .no_proxy()
            .user_agent("notifier/0.1")
        )
        if config.http2_only:
            builder = builder.http2_prior_knowledge().http2_keep_alive_interval(_PING_INTERVAL)
        else:
            builder = builder.http2(True)
        if self._ca_pem is not None:
            builder = builder.add_root_certificate_pem(self._ca_pem)
        return builder.build()

    def _pick(self) -> _Connection:
        """The connection with the fewest requests in flight; a new one when all are full."""
        connections = self._connections
        best = connections[0]
        if best.inflight < self._streams and len(connections) == 1:
            return best  # the usual case: one connection with room
        best = min(connections, key=_inflight)
        if best.inflight >= self._streams and len(connections) < self._max_connections:
            best = _Connection(self._build())
            connections.append(best)
        return best

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        want_headers: Iterable[str] = (),
        timeout_seconds: float | None = None,
    ) -> HttpResponse:
        """POST ``body``; return the answer or raise :class:`TransportFailure`."""
        connection = self._pick()
        request = connection.client.post(url).headers(headers).body_bytes(body)
        if timeout_seconds is not None:
            request = request.timeout(timedelta(seconds=timeout_seconds))
        connection.inflight += 1
        try:
            response = await request.build().send()
            payload = bytes(await response.bytes())
        except rq_errors.RequestTimeoutError as exc:
            raise TransportFailure("timeout", _describe(exc, url)) from None
        except rq_errors.RequestError as exc:
            detail = _describe(exc, url)
            kind: FailureKind = "tls" if _is_tls(detail) else "connection"
            raise TransportFailure(kind, detail) from None
        finally:
            connection.inflight -= 1
        wanted = {name: value for name in want_headers if (value := response.get_header(name))}
        return HttpResponse(status=response.status, headers=wanted, body=payload)

    async def close(self) -> None:
        for connection in self._connections:
            await connection.client.close()


def _inflight(connection: _Connection) -> int:
    return connection.inflight


def _describe(exc: rq_errors.RequestError, url: str) -> str:
    """The innermost causes of a failure, with the URL (which may hold a token) cut out."""
    causes = [c.get("message", "") for c in (exc.details or {}).get("causes") or []]
    useful = [c for c in causes if "url (" not in c and c]
    text = "; ".join(useful[-2:]) or exc.message or type(exc).__name__
    return text.replace(url, "<url>")[:300]


def _is_tls(detail: str) -> bool:
    lowered = detail.lower()
    return any(word in lowered for word in _TLS_WORDS)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


_LOCAL_CODES = frozenset({"config_error", "timeout", "connection", "tls"})


class ResponseCounter:
    """``PROVIDER_RESPONSES`` for one provider, label children cached (this is the hot path).

    Labels stay bounded: a code outside ``known`` (and our own config_error, timeout,
    connection) is counted as ``other``.
    """

    def __init__(self, provider: str, known: frozenset[str]) -> None:
        self._provider = provider
        self._known = known | _LOCAL_CODES
        self._children: dict[tuple[int | None, str], Any] = {}

    def code_of(self, result: PushResult, reason: str | None = None) -> str:
        if result.sent:
            return "ok"
        for code in (reason, result.code):
            if code in self._known:
                return code
        return "other"

    def record(self, result: PushResult, reason: str | None = None) -> PushResult:
        key = (result.provider_status, self.code_of(result, reason))
        child = self._children.get(key)
        if child is None:
            child = PROVIDER_RESPONSES.labels(
                provider=self._provider, status_class=status_class(key[0]), code=key[1]
            )
            self._children[key] = child
        child.inc()
        return result


def status_class(status: int | None) -> str:
    """A bounded metric label for an HTTP status: ``2xx`` .. ``5xx``, or ``none``."""
    return "none" if status is None else f"{status // 100}xx"
