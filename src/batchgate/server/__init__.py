"""The ASGI application: the envelope of SPEC.md §1 around the batch namespace and the actions."""

from batchgate.server.app import create_app

__all__ = ["create_app"]
