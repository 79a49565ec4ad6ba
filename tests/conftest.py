"""Fixtures shared by every ring: settings on a fresh SQLite file, a store per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchgate.settings import Settings
from batchgate.store import Store, open_store

import pg

FAST_RETRIES = (0.05, 0.1, 0.2)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'batchgate.db'}"


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    """Settings for a test server: loopback callbacks allowed, quick retries and leases."""
    return Settings(
        db=sqlite_url,
        callback_allow="127.0.0.1",
        callback_retry_schedule=FAST_RETRIES,
        lease_s=2.0,
        poll_s=0.2,
        callback_timeout_s=2.0,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for each test, on every backend."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    async with pg.fresh_database() as url:
        yield url


@pytest.fixture
def each_store_settings(db_url: str) -> Settings:
    """The test server's settings, on a fresh database of each backend in turn."""
    return Settings(
        db=db_url,
        callback_allow="127.0.0.1",
        callback_retry_schedule=FAST_RETRIES,
        lease_s=2.0,
        poll_s=0.2,
        callback_timeout_s=2.0,
    )


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = open_store(db_url, result_ttl_s=3600)
    await store.open()
    yield store
    await store.close()
