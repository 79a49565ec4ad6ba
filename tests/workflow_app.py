"""An application for the crash tests: each job notes every time it runs in a SQLite file of its own
(WORKFLOW_LOG), so a test can tell which jobs ran again after a kill -9."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from batchgate import ActionContext, App

app = App()


@app.action("wf", "step")
async def step(ctx: ActionContext, name: str, seconds: float = 0.0, **params: object) -> dict[str, object]:
    with sqlite3.connect(os.environ["WORKFLOW_LOG"]) as log:
        log.execute("CREATE TABLE IF NOT EXISTS runs (name TEXT, batch TEXT, run INTEGER)")
        log.execute("INSERT INTO runs VALUES (?, ?, ?)", (name, ctx.async_id, ctx.run))
    await asyncio.sleep(seconds)
    return {"name": name, "got": params}
