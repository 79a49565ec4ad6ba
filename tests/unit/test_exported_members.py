"""The public surface: exactly what `batchgate.__all__` lists, sorted (as httpx checks its own)."""

from __future__ import annotations

import types

import pytest

import batchgate


def test_all_lists_every_public_member_sorted() -> None:
    public = sorted(
        name
        for name, value in vars(batchgate).items()
        if (not name.startswith("_") or name == "__version__") and not isinstance(value, types.ModuleType)
    )
    assert batchgate.__all__ == public


def test_the_application_object_is_importable_from_the_top() -> None:
    from batchgate import App
    from batchgate.actions import App as RegistryApp

    assert App is RegistryApp


def test_the_old_name_of_the_application_object_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="batchgate.App"):
        from batchgate import Gateway

    assert Gateway is batchgate.App
