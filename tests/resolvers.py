"""Scripted DNS for the address guard's tests: this machine resolves nothing beyond loopback."""

from __future__ import annotations

import re
import socket
from contextlib import AbstractContextManager

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from batchgate.netguard import UnsafeAddress

NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def refused(reason: str) -> AbstractContextManager[pytest.ExceptionInfo[UnsafeAddress]]:
    """Expect UnsafeAddress whose message contains reason verbatim."""
    return pytest.raises(UnsafeAddress, match=re.escape(reason))


class FakeResolver(AbstractResolver):
    """Answers each lookup with the next list of addresses (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        addresses = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=NUMERIC)
            for a in addresses
        ]

    async def close(self) -> None:
        pass
