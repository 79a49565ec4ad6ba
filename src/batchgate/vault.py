"""Secrets at rest: the keys' secrets encrypted with the operator's server key, when one is set.

The API secrets and webhook secrets must be readable by batchgate (an HMAC needs the secret
itself, not a hash of it), so a stolen database file or backup would hand every key to its
thief. With `BATCHGATE_SERVER_KEY` set, they are stored as Fernet tokens (AES-128-CBC with an
HMAC-SHA256, from the `cryptography` package) and decrypted only in memory.

    BATCHGATE_SERVER_KEY=NEW_KEY,OLD_KEY    the first encrypts; every one of them decrypts

Rotation: set the new key first and the old one after it, run `batchgate keys reseal` (which
writes every secret again under the new key), then drop the old key. A secret stored without
encryption (before a server key was set) is still read, and is encrypted by the next reseal.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from batchgate.protocol.errors import BatchgateError

SEALED_PREFIX = "fernet:"


class VaultError(BatchgateError):
    """A stored secret cannot be decrypted with the server keys given."""


def new_server_key() -> str:
    """A new server key, for BATCHGATE_SERVER_KEY."""
    return Fernet.generate_key().decode()


class Vault:
    """Seals secrets for storage and opens them again; without server keys, it stores them as they are."""

    def __init__(self, server_keys: str = "") -> None:
        keys = [key.strip() for key in server_keys.split(",") if key.strip()]
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None
        except ValueError as exc:
            raise VaultError(f"a server key is not a Fernet key (32 url-safe base64 bytes): {exc}") from None

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            return secret
        return SEALED_PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, stored: str) -> str:
        if not stored.startswith(SEALED_PREFIX):
            return stored  # stored before a server key was set
        if self._fernet is None:
            raise VaultError("the database holds encrypted secrets: set BATCHGATE_SERVER_KEY to read them")
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED_PREFIX).encode()).decode()
        except InvalidToken:
            raise VaultError("a stored secret does not decrypt with any BATCHGATE_SERVER_KEY given") from None
