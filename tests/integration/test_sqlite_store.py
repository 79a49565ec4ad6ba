"""What only the SQLite backend has to get right: a shared file, and group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from batchgate.store.sqlite import SQLiteStore


async def test_many_stores_opening_a_new_file_at_once_all_work_and_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [SQLiteStore(url, result_ttl_s=60) for _ in range(8)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        await asyncio.gather(*(store.create_key(f"account-{i}") for i, store in enumerate(stores)))
        assert len(await stores[0].list_keys()) == 8
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    with sqlite3.connect(tmp_path / "shared.db") as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_concurrent_writes_share_commits_and_a_failing_one_does_not_undo_the_others(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'bg.db'}", result_ttl_s=60)
    await store.open()
    try:
        commits: list[int] = []
        original = store._commit_group
        store._commit_group = lambda ops: (commits.append(len(ops)), original(ops))[1]  # type: ignore[method-assign]
        key = await store.create_key("acme")
        duplicate = store._write(
            lambda c: c.execute(
                "INSERT INTO api_keys (key, secret, account, created_at) VALUES (?, 's', 'x', 0)", (key.key,)
            )
        )
        results = await asyncio.gather(
            *(store.create_key(f"a{i}") for i in range(20)), duplicate, return_exceptions=True
        )
        assert sum(isinstance(r, Exception) for r in results) == 1  # only the duplicate failed
        assert len(await store.list_keys()) == 21
        assert max(commits) > 1  # writes were grouped
    finally:
        await store.close()
