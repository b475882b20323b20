"""Throwaway credentials for the emulator: a CA and server cert, an APNs key, an FCM account.

Everything lives in one directory (``--keys DIR``) and is created only when missing, so a
second start reuses the same files. The emulator checks requests with the PUBLIC halves of
these keys, exactly as Apple and Google would with theirs:

==========================  ========================================================
``ca.pem``                  the CA to trust (``NOTIFIER_PROVIDER_CA_FILE``); kept for good
``ca-key.pem``              its key, so a new server certificate keeps the same CA
``server.pem``              server certificate for 127.0.0.1, localhost and the public host
``server-key.pem``          its key (PKCS#8)
``apns-key.p8``             APNs auth key: EC P-256, PKCS#8 PEM
``apns.json``               ``key_id``, ``team_id`` and ``topic`` of that key
``fcm-service-account.json`` Google service-account JSON; ``token_uri`` is the emulator's
``notifier.env``            the ``NOTIFIER_*`` lines: ``set -a; . DIR/notifier.env``
``credentials.jsonl``       public halves of credentials added through the control API
==========================  ========================================================

The public URL (``--public-url``) is what clients dial: ``notifier.env`` and ``token_uri``
carry it and the certificate names its host. ``env_dir`` is where other containers mount
this directory, the prefix of the file paths written into ``notifier.env``.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from emulator.tls import (
    CA_FILE,
    CERT_FILE,
    CERT_KEY_FILE,
    ensure_tls,
    pkcs8,
    public_url,
    url_host,
    write_private,
)

APNS_KEY_FILE = "apns-key.p8"
APNS_META_FILE = "apns.json"
FCM_FILE = "fcm-service-account.json"
ENV_FILE = "notifier.env"

DEFAULT_TOPIC = "dev.notifier.example"
DEFAULT_PROJECT = "notifier-emulator"
_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class KeySet:
    """Paths and identifiers of one credentials directory."""

    directory: Path
    apns_key_id: str
    apns_team_id: str
    apns_topic: str
    fcm_project_id: str
    fcm_client_email: str
    fcm_private_key_id: str
    fcm_token_uri: str

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def cert_key_file(self) -> Path:
        return self.directory / CERT_KEY_FILE

    @property
    def apns_key_file(self) -> Path:
        return self.directory / APNS_KEY_FILE

    @property
    def fcm_credentials(self) -> Path:
        return self.directory / FCM_FILE

    @property
    def env_file(self) -> Path:
        return self.directory / ENV_FILE

    def apns_public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_private_key(self.apns_key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.apns_key_file} is not an EC key")
        return key.public_key()

    def fcm_public_key(self) -> rsa.RSAPublicKey:
        info = json.loads(self.fcm_credentials.read_text())
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{self.fcm_credentials} does not hold an RSA key")
        return key.public_key()

    def product_env(self, endpoint: str, env_dir: Path | None = None) -> dict[str, str]:
        """The product's settings that point the real provider clients at the emulator.

        File paths start with ``env_dir`` (where the reader mounts this directory),
        by default the directory itself.
        """
        where = self.directory if env_dir is None else env_dir
        return {
            "NOTIFIER_FCM_CREDENTIALS": str(where / FCM_FILE),
            "NOTIFIER_FCM_ENDPOINT": endpoint,
            "NOTIFIER_APNS_KEY_FILE": str(where / APNS_KEY_FILE),
            "NOTIFIER_APNS_KEY_ID": self.apns_key_id,
            "NOTIFIER_APNS_TEAM_ID": self.apns_team_id,
            "NOTIFIER_APNS_TOPIC": self.apns_topic,
            "NOTIFIER_APNS_ENDPOINT": endpoint,
            "NOTIFIER_PROVIDER_CA_FILE": str(where / CA_FILE),
        }


def _random_id(length: int = 10) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_service_account(
    project_id: str, token_uri: str, client_email: str | None = None
) -> dict[str, Any]:
    """A fresh Google service-account JSON (RSA 2048 key) for ``project_id``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pkcs8(key).decode(),
        "client_email": client_email or f"notifier@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }


def new_apns_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh APNs auth key (EC P-256) and its .p8 PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, pkcs8(key).decode()


def random_apple_id() -> str:
    """A 10-character id like Apple's team and key ids."""
    return _random_id()


def _ensure_apns(directory: Path) -> dict[str, str]:
    meta_path = directory / APNS_META_FILE
    if (directory / APNS_KEY_FILE).is_file() and meta_path.is_file():
        meta: dict[str, str] = json.loads(meta_path.read_text())
        return meta
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(directory / APNS_KEY_FILE, pkcs8(key))
    meta = {"key_id": _random_id(), "team_id": _random_id(), "topic": DEFAULT_TOPIC}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _ensure_fcm(directory: Path, token_uri: str) -> dict[str, Any]:
    path = directory / FCM_FILE
    if path.is_file():
        info: dict[str, Any] = json.loads(path.read_text())
        if info.get("token_uri") != token_uri:
            info["token_uri"] = token_uri
            write_private(path, (json.dumps(info, indent=2) + "\n").encode())
        return info
    info = new_service_account(DEFAULT_PROJECT, token_uri)
    write_private(path, (json.dumps(info, indent=2) + "\n").encode())
    return info


def check_env_dir(env_dir: Path | None) -> None:
    """``ValueError`` unless ``env_dir`` is absent or absolute (another container's path)."""
    if env_dir is not None and not env_dir.is_absolute():
        raise ValueError(f"--env-dir must be an absolute path, got {str(env_dir)!r}")


def ensure_keys(directory: Path, endpoint: str, *, env_dir: Path | None = None) -> KeySet:
    """Create whatever is missing in ``directory`` and describe it.

    ``endpoint`` is the emulator's public URL (``https://127.0.0.1:8443``, checked by
    :func:`emulator.tls.public_url`, ``ValueError`` if bad): the service account's
    ``token_uri`` and ``notifier.env`` point at it, rewritten if it changed, and the server
    certificate names its host. ``env_dir`` (absolute) prefixes the file paths written into
    ``notifier.env``; by default the directory itself.
    """
    endpoint = public_url(endpoint)
    check_env_dir(env_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ensure_tls(directory, url_host(endpoint))
    apns = _ensure_apns(directory)
    fcm = _ensure_fcm(directory, f"{endpoint}/token")
    keys = KeySet(
        directory=directory.resolve(),
        apns_key_id=apns["key_id"],
        apns_team_id=apns["team_id"],
        apns_topic=apns["topic"],
        fcm_project_id=fcm["project_id"],
        fcm_client_email=fcm["client_email"],
        fcm_private_key_id=fcm["private_key_id"],
        fcm_token_uri=fcm["token_uri"],
    )
    lines = [f"{name}={value}" for name, value in keys.product_env(endpoint, env_dir).items()]
    keys.env_file.write_text("\n".join(lines) + "\n")
    return keys
