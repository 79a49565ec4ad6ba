"""The built-in `test` namespace (docs/protocol.md §3), for exercising a deployment."""

from __future__ import annotations

import asyncio
from typing import Any

from batchgate.actions.registry import App
from batchgate.protocol.errors import invalid_param
from batchgate.protocol.timestamps import now_timestamp


def builtin_actions(*, sleep_cap_s: float) -> App:
    app = App()

    @app.action("test", "ping", read_only=True)
    async def ping() -> dict[str, str]:
        return {"ack": now_timestamp()}

    @app.action("test", "echo", read_only=True)
    async def echo(**params: Any) -> dict[str, Any]:
        return params

    @app.action("test", "sleep", read_only=True)
    async def sleep(seconds: Any = 0) -> dict[str, float]:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= sleep_cap_s
        ):
            raise invalid_param("seconds", f"must be a number from 0 to {sleep_cap_s:g}")
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    return app
