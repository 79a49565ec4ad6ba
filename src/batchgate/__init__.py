"""batchgate: an asynchronous batch gateway for RPC-style JSON APIs.

    from batchgate import Gateway

    gateway = Gateway()

    @gateway.action("event", "inviteContacts")
    async def invite_contacts(event: int, contacts: list[int]) -> dict[str, object]: ...

Serve it with `batchgate serve --app package.module:gateway`.
"""

from batchgate.actions.registry import ActionContext, Gateway, Reply
from batchgate.protocol.errors import BadRequest, NotFound, WireError, invalid_param, missing_param

__version__ = "0.1.0"

__all__ = [
    "ActionContext",
    "BadRequest",
    "Gateway",
    "NotFound",
    "Reply",
    "WireError",
    "__version__",
    "invalid_param",
    "missing_param",
]
