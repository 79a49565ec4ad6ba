"""The public surface: exactly what `batchgate.__all__` lists, sorted (as httpx checks its own)."""

from __future__ import annotations

import types

import batchgate


def test_all_lists_every_public_member_sorted() -> None:
    public = sorted(
        name
        for name, value in vars(batchgate).items()
        if (not name.startswith("_") or name == "__version__") and not isinstance(value, types.ModuleType)
    )
    assert batchgate.__all__ == public


def test_the_application_object_is_importable_from_the_top() -> None:
    from batchgate import Gateway
    from batchgate.actions import Gateway as RegistryGateway

    assert Gateway is RegistryGateway
