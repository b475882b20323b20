"""The APNs topics a notification may name (issue 16): its app's allowed topics.

An app with its own APNs credential may push under that credential's topics; any other app
under the deployment's ``NOTIFIER_APNS_TOPIC``. Read only when a request names a topic:
the store keeps each credential's topics in clear (its public summary), so this is one
indexed read and no decryption.
"""

from __future__ import annotations

from api.problems import Problem, field_error, unprocessable
from notifier.settings import Settings
from notifier.store.base import NotificationStore


async def allowed_topics(store: NotificationStore, settings: Settings, app: str) -> list[str]:
    for credential in await store.get_credentials(app):
        if credential.provider == "apns":
            return [str(t) for t in credential.public.get("topics", ())]
    return [settings.apns_topic] if settings.apns_topic else []


def topic_refusal(topic: str | None, allowed: list[str], *where: str | int) -> Problem | None:
    """The 422 for a topic the app may not push under; None when it may (or names none)."""
    if topic is None or topic in allowed:
        return None
    shown = ", ".join(allowed) if allowed else "none: no APNs credential is configured"
    message = f"not among the app's allowed APNs topics ({shown})"
    return unprocessable([field_error([*where, "apns_topic"], message)])
