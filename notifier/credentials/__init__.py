"""Per-app provider credentials (issue 16): the model, sealing at rest, and the vault.

- :mod:`notifier.credentials.model`: parse and validate FCM / APNs credentials; summaries.
- :mod:`notifier.credentials.sealing`: AES-256-GCM under ``NOTIFIER_SECRETS_KEY``.
- :mod:`notifier.credentials.vault`: store + keyring: set, load (decrypted), delete,
  describe, watch for changes, rotate the secrets key.
- :mod:`notifier.credentials.commands`: ``notifier app credentials ...`` and ``adminkey``.
"""
