"""What a job or a direct call runs: registered Python actions and the built-in `test` namespace."""

from batchgate.actions.registry import ActionContext, App, Forward, Reply

__all__ = ["ActionContext", "App", "Forward", "Reply"]
