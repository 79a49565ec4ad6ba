"""The path of a call on the wire, built in one place for the client and for gateway mode."""

from __future__ import annotations

from urllib.parse import quote

API_VERSION = "1.0"


def call_uri(namespace: str, action: str) -> str:
    """`/api/1.0/{namespace}?action={action}`: the path and query a call is sent to and signed with.

    Both names are percent-quoted, so an odd one cannot add a path segment or a query parameter;
    a plain name is unchanged."""
    return f"/api/{API_VERSION}/{quote(namespace, safe='')}?action={quote(action, safe='')}"
