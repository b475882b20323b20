"""An app's provider credentials: an FCM service account or an APNs token-signing key.

Parsing validates the shape (and that the key loads, with ``cryptography``) and keeps the
material in objects whose ``repr`` hides it. What may be shown is :meth:`summary`: the
fingerprint of the public key, key ids, team, topics, project; never the private key.
Every error text names the fault and never quotes the input (it may be a key).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# A fingerprint: hex SHA-256 of the DER SubjectPublicKeyInfo, shortened (like ssh-keygen's
# "SHA256:" form it names the key pair without revealing anything of the private half).
FINGERPRINT_HEX_CHARS = 32
MAX_TOPICS = 50
MAX_MATERIAL_BYTES = 64 * 1024
# Apple's key and team ids are 10 upper-case alphanumerics; topics are bundle ids, optionally
# with a suffix (.voip, .complication, .push-type.liveactivity ...).
APPLE_ID_PATTERN = r"^[A-Z0-9]{10}$"
TOPIC_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"
_APPLE_ID = re.compile(APPLE_ID_PATTERN)
_TOPIC = re.compile(TOPIC_PATTERN)
FCM_FIELDS = ("project_id", "client_email", "private_key", "token_uri")


class Provider(StrEnum):
    FCM = "fcm"
    APNS = "apns"


class CredentialError(ValueError):
    """Credential material is unusable. ``field`` names what is wrong (``private_key``,
    ``key_id`` ...); the text never quotes the material."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _fingerprint(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()[:FINGERPRINT_HEX_CHARS]


def _load_private_key(pem: str, field: str) -> Any:
    if not isinstance(pem, str) or not pem.strip():
        raise CredentialError(field, "must be a PEM private key")
    try:
        return serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeError):
        # cryptography's messages do not quote the key, but ours is the one shown anyway
        raise CredentialError(field, "not an unencrypted PEM private key") from None
    except UnsupportedAlgorithm:
        raise CredentialError(field, "not a PEM private key of a supported type") from None


@dataclass(frozen=True, slots=True, repr=False)
class FcmCredential:
    """A Google service account (the JSON Firebase hands out), kept whole."""

    info: dict[str, Any]
    fingerprint: str

    provider = Provider.FCM

    @classmethod
    def parse(cls, raw: bytes | str | dict[str, Any]) -> FcmCredential:
        """From the service-account JSON (bytes, text or already decoded)."""
        if isinstance(raw, bytes | str):
            if len(raw) > MAX_MATERIAL_BYTES:
                raise CredentialError("service_account", "larger than 64 KiB")
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise CredentialError("service_account", "not valid JSON") from None
        if not isinstance(raw, dict):
            raise CredentialError("service_account", "must be a JSON object")
        for name in FCM_FIELDS:
            value = raw.get(name)
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise CredentialError(name, "missing or not a non-empty string")
        if raw.get("type", "service_account") != "service_account":
            raise CredentialError("type", "must be service_account")
        if not raw["token_uri"].startswith(("https://", "http://")):
            raise CredentialError("token_uri", "must be an http(s) URL")
        key = _load_private_key(raw["private_key"], "private_key")
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CredentialError("private_key", "must be an RSA private key")
        return cls(info=dict(raw), fingerprint=_fingerprint(key.public_key()))

    @property
    def project_id(self) -> str:
        return str(self.info["project_id"])

    @property
    def client_email(self) -> str:
        return str(self.info["client_email"])

    def material(self) -> bytes:
        """What is encrypted at rest: the service-account JSON."""
        return orjson.dumps(self.info)

    def summary(self) -> dict[str, Any]:
        """What ``show`` and the admin API print: no private key."""
        return {
            "provider": self.provider.value,
            "project_id": self.project_id,
            "client_email": self.client_email,
            "private_key_id": str(self.info.get("private_key_id") or ""),
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        return f"FcmCredential(project_id={self.project_id!r}, fingerprint={self.fingerprint!r})"


@dataclass(frozen=True, slots=True, repr=False)
class ApnsCredential:
    """An APNs token-signing key (.p8, EC P-256), its key id, team id and allowed topics."""

    private_key_pem: str
    key_id: str
    team_id: str
    topics: tuple[str, ...]
    fingerprint: str

    provider = Provider.APNS

    @classmethod
    def parse(
        cls, private_key_pem: str, key_id: str, team_id: str, topics: list[str] | tuple[str, ...]
    ) -> ApnsCredential:
        if len(private_key_pem) > MAX_MATERIAL_BYTES:
            raise CredentialError("private_key", "larger than 64 KiB")
        key = _load_private_key(private_key_pem, "private_key")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise CredentialError("private_key", "must be an EC P-256 (.p8) private key")
        for name, value in (("key_id", key_id), ("team_id", team_id)):
            if not isinstance(value, str) or not _APPLE_ID.fullmatch(value):
                raise CredentialError(name, "must be 10 upper-case letters or digits")
        if not isinstance(topics, list | tuple) or not 1 <= len(topics) <= MAX_TOPICS:
            raise CredentialError("topics", f"give 1..{MAX_TOPICS} topics")
        for topic in topics:
            if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
                raise CredentialError(
                    "topics", "each topic must be a bundle id (A-Z a-z 0-9 . - _)"
                )
        return cls(
            private_key_pem=private_key_pem,
            key_id=key_id,
            team_id=team_id,
            topics=tuple(dict.fromkeys(topics)),
            fingerprint=_fingerprint(key.public_key()),
        )

    @classmethod
    def from_material(cls, raw: bytes) -> ApnsCredential:
        info = orjson.loads(raw)
        return cls.parse(info["private_key"], info["key_id"], info["team_id"], info["topics"])

    def material(self) -> bytes:
        return orjson.dumps(
            {
                "private_key": self.private_key_pem,
                "key_id": self.key_id,
                "team_id": self.team_id,
                "topics": list(self.topics),
            }
        )

    def summary(self) -> dict[str, Any]:
        return {
            "provider": self.provider.value,
            "key_id": self.key_id,
            "team_id": self.team_id,
            "topics": list(self.topics),
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        return f"ApnsCredential(key_id={self.key_id!r}, team_id={self.team_id!r})"


Credential = FcmCredential | ApnsCredential


def credential_from_material(provider: Provider, raw: bytes) -> Credential:
    """The credential back from its decrypted :meth:`material`."""
    if provider is Provider.FCM:
        return FcmCredential.parse(raw)
    return ApnsCredential.from_material(raw)
