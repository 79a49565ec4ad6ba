"""The ASGI application: the envelope (docs/protocol.md §1) around the batch namespace and the actions."""

from batchgate.server.app import create_app

__all__ = ["create_app"]
