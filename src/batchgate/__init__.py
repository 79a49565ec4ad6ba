"""batchgate: an asynchronous batch gateway for RPC-style JSON APIs."""

__version__ = "0.1.0"
