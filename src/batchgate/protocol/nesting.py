"""How deep JSON may nest. orjson writes at most 254 levels, and a value that deep may still be
wrapped (a response in a job's result, resolved params in their job's), so the wire refuses params
nested deeper than MAX_DEPTH: far more than any API call needs, far less than any writer's limit."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def nested_deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest in `value` more than `limit` levels (walked without
    recursion, so no input can exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def may_nest_deeper_than(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """False when the JSON text `body` cannot nest deeper than `limit`: it opens no more arrays
    and objects than that (a quick bound, so that most bodies need no walk)."""
    return body.count(b"[") + body.count(b"{") > limit
