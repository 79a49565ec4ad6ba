"""batchgate: an asynchronous batch gateway for RPC-style JSON APIs.

    from batchgate import App

    app = App()

    @app.action("event", "inviteContacts")
    async def invite_contacts(event: int, contacts: list[int]) -> dict[str, object]: ...

Serve it with `batchgate serve --app package.module:app`.
"""

import warnings

from batchgate.actions.registry import ActionContext, App, Reply
from batchgate.protocol.errors import (
    BadRequest,
    BatchgateError,
    NotFound,
    WireError,
    invalid_param,
    missing_param,
)

__version__ = "0.2.0"

__all__ = [
    "ActionContext",
    "App",
    "BadRequest",
    "BatchgateError",
    "NotFound",
    "Reply",
    "WireError",
    "__version__",
    "invalid_param",
    "missing_param",
]


def __getattr__(name: str) -> type[App]:
    """`Gateway`, the application object's name before 0.2, still works for a while."""
    if name == "Gateway":
        warnings.warn(
            "batchgate.Gateway is now batchgate.App (gateway mode is upstream forwarding)",
            DeprecationWarning,
            stacklevel=2,
        )
        return App
    raise AttributeError(f"module 'batchgate' has no attribute {name!r}")
