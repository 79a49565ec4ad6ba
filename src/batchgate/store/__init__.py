"""Durable state behind one contract (`Store`), one module per backend, chosen by the database URL."""

from __future__ import annotations

from batchgate.store.base import Store, StoreError, StoreUnavailable
from batchgate.vault import Vault


def open_store(url: str, *, result_ttl_s: float, vault: Vault | None = None) -> Store:
    """The store for a database URL: `sqlite:///path` or `postgresql://...` (not yet connected).
    With a `vault` holding server keys, the keys' secrets are stored encrypted."""
    if url.startswith("sqlite://"):
        from batchgate.store.sqlite import SQLiteStore

        return SQLiteStore(url, result_ttl_s=result_ttl_s, vault=vault)
    if url.startswith(("postgresql://", "postgres://")):
        from batchgate.store.postgres import PostgresStore

        return PostgresStore(url, result_ttl_s=result_ttl_s, vault=vault)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


__all__ = ["Store", "StoreError", "StoreUnavailable", "open_store"]
