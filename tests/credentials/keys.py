"""Credential material for tests: fresh keys, never reused across runs."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def apns_pem() -> str:
    """A new .p8 key's text (EC P-256, PKCS#8 PEM, like Apple's)."""
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@functools.cache
def _rsa_pem(n: int) -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def service_account(project_id: str = "proj-a", n: int = 0) -> dict[str, Any]:
    """A service-account JSON object (the ``n``-th RSA key of this run)."""
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": f"kid{n}",
        "private_key": _rsa_pem(n),
        "client_email": f"notifier@{project_id}.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def service_account_bytes(project_id: str = "proj-a", n: int = 0) -> bytes:
    return orjson.dumps(service_account(project_id, n))


def secret_parts(pem: str) -> list[str]:
    """Lines of a PEM key's body: none may appear in any output."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]
