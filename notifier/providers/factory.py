"""Build the configured provider clients from the settings, once at process start."""

from __future__ import annotations

from notifier.models import Platform
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import Provider
from notifier.providers.fcm import FcmProvider
from notifier.providers.http2 import TransportConfig
from notifier.settings import Settings


def build_providers(settings: Settings) -> dict[Platform, Provider]:
    """One client per configured platform (none for an unconfigured one).

    The caller owns them and must ``await provider.close()`` on each at shutdown. A bad
    key or credentials file raises ``ValueError`` naming the file, never its content.
    """
    transport = TransportConfig(
        timeout_seconds=settings.provider_timeout_seconds,
        ca_file=settings.provider_ca_file,
        streams_per_connection=settings.provider_streams_per_connection,
        max_connections=settings.provider_connections,
    )
    providers: dict[Platform, Provider] = {}
    if settings.fcm_credentials is not None:
        providers[Platform.FCM] = FcmProvider.from_files(
            settings.fcm_credentials, endpoint=settings.fcm_endpoint, transport=transport
        )
    if settings.apns_key_file is not None:
        # the settings validator guarantees the other three when the key file is set
        assert settings.apns_key_id and settings.apns_team_id and settings.apns_topic
        providers[Platform.APNS] = ApnsProvider.from_files(
            settings.apns_key_file,
            key_id=settings.apns_key_id,
            team_id=settings.apns_team_id,
            topic=settings.apns_topic,
            endpoint=settings.apns_endpoint,
            transport=transport,
        )
    return providers
