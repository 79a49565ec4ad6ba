"""The wire protocol (docs/protocol.md): error codes, request signing and timestamps.

The server and the client share this package, so a request is signed and verified by the same code.
"""
