"""Credential material at rest: AES-256-GCM under ``NOTIFIER_SECRETS_KEY``.

Each credential is sealed with a fresh random 96-bit nonce (``nonce || ciphertext+tag``)
and the app and provider as associated data, so a ciphertext copied onto another app or
provider fails to open. Beside it the store keeps the id of the key that sealed it
(:func:`key_id`), so a rotation (``notifier app credentials rotate-key``) can tell old
from new: the :class:`Keyring` seals with the current key and opens with the current or
the previous one (``NOTIFIER_SECRETS_KEY_PREVIOUS``). No key ever reaches a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size
KEY_ID_HEX_CHARS = 8
KEY_FORMAT = "32 random bytes in URL-safe base64 (44 characters)"


class SealingError(Exception):
    """A credential cannot be opened; the text says why, never with key or material."""


def parse_key(text: str) -> bytes:
    """A secrets key from its URL-safe base64 text; ValueError (not quoting it) otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeError):
        raise ValueError(f"must be {KEY_FORMAT}") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"must be {KEY_FORMAT}")
    return raw


def new_key() -> str:
    """A new random secrets key, as ``NOTIFIER_SECRETS_KEY`` takes it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """The short public name of a key (stored beside each ciphertext): 32 bits of a hash
    of the key under its own label, so it tells keys apart and reveals nothing of them."""
    return hashlib.sha256(b"notifier secrets key id\x00" + key).hexdigest()[:KEY_ID_HEX_CHARS]


def _associated_data(app: str, provider: str) -> bytes:
    # JSON: unambiguous whatever characters the app name holds.
    return b"notifier credential v1\x00" + orjson.dumps([app, provider])


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed credential as the store keeps it."""

    key_id: str
    ciphertext: bytes  # nonce || AES-GCM ciphertext and tag


@dataclass(frozen=True, slots=True, repr=False)
class Keyring:
    """The current secrets key and, during a rotation, the previous one."""

    current: bytes
    previous: bytes | None = None

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def seal(self, app: str, provider: str, material: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        body = AESGCM(self.current).encrypt(nonce, material, _associated_data(app, provider))
        return Sealed(self.current_id, nonce + body)

    def open(self, app: str, provider: str, sealed: Sealed) -> bytes:
        """The material; :class:`SealingError` if no key of the ring has that id, or the
        ciphertext does not authenticate (tampered, or moved from another app/provider)."""
        key = self._key_for(sealed.key_id)
        nonce, body = sealed.ciphertext[:NONCE_BYTES], sealed.ciphertext[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, _associated_data(app, provider))
        except InvalidTag:
            raise SealingError(
                f"the {provider} credential of app {app!r} does not authenticate under "
                f"secrets key {sealed.key_id} (tampered, or not this app's)"
            ) from None

    def _key_for(self, wanted: str) -> bytes:
        for key in (self.current, self.previous):
            if key is not None and key_id(key) == wanted:
                return key
        known = ", ".join(key_id(k) for k in (self.current, self.previous) if k is not None)
        raise SealingError(
            f"sealed with secrets key {wanted}, but NOTIFIER_SECRETS_KEY and "
            f"NOTIFIER_SECRETS_KEY_PREVIOUS are {known}"
        )

    def __repr__(self) -> str:
        previous = None if self.previous is None else key_id(self.previous)
        return f"Keyring(current={self.current_id}, previous={previous})"
