"""API keys as the envelope looks them up: read from the store, remembered for a few seconds.

Every call needs its key's secret; remembering it briefly spares a database read per call. A
revocation therefore takes effect within `ttl_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from batchgate.models import ApiKey
from batchgate.store import Store

MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(
        self, store: Store, *, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    async def get(self, key: str) -> ApiKey | None:
        """The key, or None when there is no such key (unknown keys are remembered too)."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        api_key = await self.store.get_key(key)
        if len(self._entries) >= MAX_ENTRIES:  # a flood of made-up keys must not grow this forever
            self._entries.clear()
        self._entries[key] = (now + self.ttl_s, api_key)
        return api_key
