"""Settings: one frozen object read once from the environment (docs/design.md section 5).

Nothing else in the code base reads ``os.environ`` for configuration. A bad value stops
the process at start with one line naming the variable (:class:`SettingsError`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from notifier.credentials.sealing import parse_key
from notifier.models import Lane

ENV_PREFIX = "NOTIFIER_"


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line naming the variable."""


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class UnknownOutcomePolicy(StrEnum):
    """What the sweeper does with an attempt that started but never finished (worker crash)."""

    RESEND = "resend"  # at-least-once: push again (a duplicate is possible, and counted)
    FAIL = "fail"  # at-most-once: hold as failed with reason outcome_unknown


def _check_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(
            f"must be a {what} URL ({'|'.join(schemes)}://host...), got {_redact(value)!r}"
        )
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"has a bad port: {_redact(value)!r}") from exc
    return value


def _split_urls(value: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list (spaces around them ignored, empty items too)."""
    return tuple(url.strip() for url in value.split(",") if url.strip())


def _redact(url: str) -> str:
    """Hide the password of a URL so that a settings error never prints a secret.

    Works on malformed URLs too (``postgresql//user:pw@host``, which ``urlsplit`` does not
    see as having a password); it may hide more than the password, never less.
    """
    return _USERINFO_PASSWORD.sub(r"\1\2:***@", url)


_USERINFO_PASSWORD = re.compile(r"^([^/]*//)?([^:/@]*):.*@")


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


class Settings(BaseModel):
    """Every setting of the product, with its docs/design.md default."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    store_url: str = "mongodb://127.0.0.1:27017/notifier"
    # One URL, or several (comma-separated): the nodes of a RabbitMQ cluster.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue: str = Field(default="notifications", min_length=1, max_length=200)
    prefetch: int = Field(default=10, ge=1, le=10_000)
    # The lanes a worker consumes (comma-separated): both by default; one, to run workers
    # per lane. The share of a worker's slots bulk work never takes, kept for transactional.
    lanes: tuple[Lane, ...] = (Lane.TRANSACTIONAL, Lane.BULK)
    transactional_reserve: float = Field(default=0.25, gt=0, lt=1)
    lock_seconds: int = Field(default=300, ge=5)
    max_attempts: int = Field(default=5, ge=1, le=100)

    fcm_credentials: Path | None = None
    fcm_endpoint: str = "https://fcm.googleapis.com"
    apns_key_file: Path | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_endpoint: str = "https://api.push.apple.com"
    provider_ca_file: Path | None = None
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Pushes in flight = rate x round-trip time (docs/operations.md, sizing). A provider
    # client puts this many on one HTTP/2 connection before it opens another (Google
    # advertises 100 streams a connection, APNs 1000), up to this many connections.
    provider_streams_per_connection: int = Field(default=100, ge=1, le=10_000)
    provider_connections: int = Field(default=4, ge=1, le=64)
    # Per-app credentials at rest (docs/credentials.md): the AES-256-GCM key, and during a
    # rotation the key being replaced. SecretStr: never in a repr, a log or an error.
    secrets_key: SecretStr | None = None
    secrets_key_previous: SecretStr | None = None
    # Per-app credentials in the workers (docs/credentials.md): how many pushes one app
    # credential may have in flight in one worker (a slow or throttled credential cannot
    # take every slot; the environment's default has a bound of its own, below), how many
    # app clients a worker keeps (LRU), how often an unhealthy credential is probed, and how
    # long its notifications are held as retrying.
    credential_concurrency: int = Field(default=32, ge=1, le=10_000)
    # The environment's credential serves every app without one of its own (all of a
    # single-tenant set-up's pushes), so its share is larger: half the default 256 slots.
    default_credential_concurrency: int = Field(default=128, ge=1, le=10_000)
    credential_clients: int = Field(default=256, ge=1, le=100_000)
    credential_probe_seconds: float = Field(default=10.0, gt=0, le=3600)
    credential_hold_seconds: float = Field(default=86_400.0, gt=0)

    sweep_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    retry_base_seconds: float = Field(default=10.0, gt=0)
    retry_max_seconds: float = Field(default=900.0, gt=0)
    unknown_outcome: UnknownOutcomePolicy = UnknownOutcomePolicy.RESEND

    api_rate_per_second: float = Field(default=2000.0, gt=0)
    api_rate_burst: int = Field(default=4000, ge=1)
    # A request body must arrive whole within this time (a stalled or trickled body is 408).
    api_body_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    log_format: LogFormat = LogFormat.JSON
    log_level: str = Field(default="info", pattern=r"^(?i:debug|info|warning|error)$")

    @field_validator("lanes", mode="before")
    @classmethod
    def _lanes(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        names = [name.strip() for name in v.split(",") if name.strip()]
        known = {lane.value for lane in Lane}
        bad = [name for name in names if name not in known]
        if bad or not names:
            raise ValueError(
                f"must name lanes among {', '.join(sorted(known))} (comma-separated), got {v!r}"
            )
        return tuple(Lane(name) for name in dict.fromkeys(names))

    @field_validator("secrets_key", "secrets_key_previous")
    @classmethod
    def _secrets_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            parse_key(v.get_secret_value())  # its error quotes nothing of the value
        return v

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, v: str) -> str:
        return _check_url(
            v, ("mongodb", "mongodb+srv", "postgresql", "postgres"), "MongoDB or PostgreSQL"
        )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, v: str) -> str:
        urls = _split_urls(v)
        if not urls:
            raise ValueError("must name at least one AMQP URL (comma-separated for a cluster)")
        for url in urls:
            _check_url(url, ("amqp", "amqps"), "AMQP")
        return v

    @field_validator("fcm_endpoint", "apns_endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _check_url(v, ("https", "http"), "HTTP(S)").rstrip("/")

    @field_validator("fcm_credentials", "apns_key_file", "provider_ca_file")
    @classmethod
    def _file(cls, v: Path | None) -> Path | None:
        return _existing_file(v)

    @model_validator(mode="after")
    def _apns_complete(self) -> Settings:
        given = {
            "apns_key_file": self.apns_key_file,
            "apns_key_id": self.apns_key_id,
            "apns_team_id": self.apns_team_id,
            "apns_topic": self.apns_topic,
        }
        if any(given.values()):
            for name, value in given.items():
                if not value:
                    raise _FieldError(name, "is required when APNs is configured")
        if self.secrets_key_previous is not None and self.secrets_key is None:
            raise _FieldError(
                "secrets_key", "is required when NOTIFIER_SECRETS_KEY_PREVIOUS is set"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise _FieldError("retry_max_seconds", "must be >= NOTIFIER_RETRY_BASE_SECONDS")
        return self

    @property
    def store_kind(self) -> str:
        """``postgresql`` or ``mongodb``, from the scheme of the store URL."""
        return "postgresql" if self.store_url.startswith(("postgresql", "postgres")) else "mongodb"

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker nodes of ``NOTIFIER_AMQP_URL``, in order: a client connects to the
        first that answers, and on losing it to the next live one (``notifier.broker``)."""
        return _split_urls(self.amqp_url)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    @property
    def apns_enabled(self) -> bool:
        return self.apns_key_file is not None

    @property
    def fcm_enabled(self) -> bool:
        return self.fcm_credentials is not None


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + str(loc[0]).upper() if loc else "NOTIFIER_*"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``environ`` (default: the process environment).

    Raises :class:`SettingsError` with one line naming the offending variable.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in env.items()
        if name.startswith(ENV_PREFIX) and value != ""
    }
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            name = ENV_PREFIX + ctx_error.field.upper()
            message = str(ctx_error)
        else:
            name = _env_name(tuple(err.get("loc", ())))
            message = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{name}: {message}") from None


# -- the local stack's settings file ------------------------------------------------------------

# Written by ``notifier stack up`` (its default run folder, relative to the checkout): the
# settings its processes run with, in shell syntax (``set -a; . .run/stack/env`` works too).
STACK_SETTINGS_FILE = Path(".run") / "stack" / "env"
STACK_SETTINGS = ("NOTIFIER_STORE_URL", "NOTIFIER_AMQP_URL", "NOTIFIER_QUEUE")


def format_settings_file(values: Mapping[str, str], header: str) -> str:
    """``NAME='value'`` lines (shell-quoted) under ``#`` comment lines."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + "".join(f"{name}={shlex.quote(v)}\n" for name, v in values.items())


def read_settings_file(path: Path) -> dict[str, str]:
    """The ``NOTIFIER_*`` assignments of a file :func:`format_settings_file` wrote."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        for word in shlex.split(line, comments=True):
            name, sep, value = word.partition("=")
            if sep and name.startswith(ENV_PREFIX):
                values[name] = value
    return values


def load_settings_beside_stack(
    cwd: Path, environ: Mapping[str, str] | None = None
) -> tuple[Settings, Path | None]:
    """The settings of a command run by hand (``apikey``, ``dlq``, ``prune``).

    When the environment sets no ``NOTIFIER_STORE_URL`` and a local stack wrote its
    settings file under ``cwd`` (a checkout where ``notifier stack up`` ran), the file
    fills in each stack setting the environment leaves unset: a key is then created in
    the store the stack's API reads, not in the default one. The file used, or None.
    """
    env = os.environ if environ is None else environ
    path = cwd / STACK_SETTINGS_FILE
    if env.get("NOTIFIER_STORE_URL") or not path.is_file():
        return load_settings(env), None
    try:
        stack = read_settings_file(path)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: unreadable ({exc})") from None
    merged = {**stack, **{k: v for k, v in env.items() if v != ""}}
    return load_settings(merged), path


def redacted_url(url: str) -> str:
    """``url`` without its password, for a message."""
    return _redact(url)
