"""What only the SQLite backend has to get right: a shared file, and group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from batchgate.store import StoreUnavailable, sql
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
        applied = [version for (version,) in conn.execute("SELECT version FROM schema_migrations")]
        assert applied == [version for version, _ in sql.migrations("sqlite")]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("failure", ["a constraint", "a bug"])
async def test_a_write_that_raises_anything_fails_only_itself_and_every_other_write_commits(
    tmp_path: Path, failure: str
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'bg.db'}", result_ttl_s=60)
    await store.open()
    try:
        groups: list[int] = []
        original = store._commit_group
        store._commit_group = lambda ops: (groups.append(len(ops)), original(ops))[1]  # type: ignore[method-assign]
        insert = "INSERT INTO api_keys (key, secret, account, created_at) VALUES ('half', 's', 'x', 0)"

        def failing(c: sqlite3.Connection) -> None:
            c.execute(insert)  # written, then undone: the write fails as a whole
            if failure == "a bug":
                raise ValueError("a bug in the write")
            c.execute(insert)  # the same key again: UNIQUE fails

        outcomes = await asyncio.gather(
            *(store.create_key(f"a{i}") for i in range(10)),
            store._write(failing),
            *(store.create_key(f"b{i}") for i in range(10)),
            return_exceptions=True,
        )
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert [type(outcome) for outcome in failed] == [
            ValueError if failure == "a bug" else StoreUnavailable
        ]
        stored = {api_key.account for api_key in await store.list_keys()}
        assert stored == {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}  # not "half"
        assert {outcome.account for outcome in outcomes if outcome not in failed} == stored  # type: ignore[union-attr]
        assert max(groups) > 1  # the writes were grouped, and the group's failure did not spread
    finally:
        await store.close()
