"""API keys as the envelope looks them up: read from the store, remembered for a few seconds.

Every call needs its key's secret; remembering it briefly spares a database read per call. A
revocation therefore takes effect within `ttl_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from batchgate.models import ApiKey
from batchgate.store import Store, StoreError

MAX_ENTRIES = 10_000
USE_EVERY_S = 60.0
log = logging.getLogger(__name__)


class KeyCache:
    def __init__(
        self, store: Store, *, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._used: dict[str, float] = {}  # when this process last wrote down a key's use
        self._writes: set[asyncio.Task[None]] = set()

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

    def used(self, key: str) -> None:
        """Notes a key's use in the store (for the console's "last used"), at most once a minute per
        key from this process, in the background: the call that used it does not wait."""
        now = self.clock()
        if now - self._used.get(key, -USE_EVERY_S) < USE_EVERY_S:
            return
        if len(self._used) >= MAX_ENTRIES:
            self._used.clear()
        self._used[key] = now
        write = asyncio.create_task(self._touch(key))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def _touch(self, key: str) -> None:
        try:
            await self.store.touch_key(key)
        except StoreError as exc:
            log.warning("could not note that key %s was used: %s", key, exc)
