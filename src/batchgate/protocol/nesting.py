"""How deep JSON may nest. orjson writes at most 254 levels, and a value that deep may still be
wrapped (a response in a job's result, resolved params in their job's), so the wire refuses params
nested deeper than MAX_DEPTH: far more than any API call needs, far less than any writer's limit."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def nested_deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest in `value` (as orjson decodes JSON) more than `limit`
    levels: walked a level at a time, without recursion, so no input can exhaust the stack."""
    level = [value]
    for _ in range(limit):
        children: list[Any] = []
        for node in level:
            kind = type(node)
            if kind is dict:
                children.extend(node.values())
            elif kind is list:
                children.extend(node)
        if not children:
            return False
        level = children
    return any(type(node) is dict or type(node) is list for node in level)


def may_nest_deeper_than(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """False when the JSON text `body` cannot nest deeper than `limit`: it opens no more arrays
    and objects than that (a quick bound, so that most bodies need no walk)."""
    return body.count(b"[") + body.count(b"{") > limit
