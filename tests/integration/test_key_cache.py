"""The envelope's key cache on a real store: a read per key per few seconds, not per call."""

from __future__ import annotations

from batchgate.server.keys import MAX_ENTRIES, KeyCache
from batchgate.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_is_read_again_only_after_the_ttl(store: Store) -> None:
    clock = Clock()
    cache = KeyCache(store, ttl_s=5, clock=clock)
    api_key = await store.create_key("acme")
    assert await cache.get(api_key.key) == api_key
    await store.revoke_key(api_key.key)
    cached = await cache.get(api_key.key)
    assert cached is not None
    assert cached.revoked_at is None  # still the remembered copy
    clock.now = 5.1
    fresh = await cache.get(api_key.key)
    assert fresh is not None
    assert fresh.revoked_at is not None


async def test_unknown_keys_are_remembered_as_unknown(store: Store) -> None:
    clock = Clock()
    cache = KeyCache(store, ttl_s=5, clock=clock)
    assert await cache.get("nosuchkey") is None
    assert "nosuchkey" in cache._entries


async def test_the_cache_never_grows_past_its_bound(store: Store) -> None:
    cache = KeyCache(store, ttl_s=60, clock=Clock())
    cache._entries = {f"k{i}": (60.0, None) for i in range(MAX_ENTRIES)}
    await cache.get("one-more")
    assert len(cache._entries) == 1
