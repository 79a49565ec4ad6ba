"""App mode: a namespace's calls forwarded to an upstream RPC API over HTTP.

Each job (or direct call) becomes `POST {base_url}/api/1.0/{namespace}?action={action}` with the
params as its body, signed with the operator's upstream key the IWS way, and its answer is the
upstream's JSON, success or wire error, passed on unchanged. One `Upstream` per configured API
owns everything about calling it, so a slow upstream stalls no other:

- its own aiohttp session, whose connector pools the connections (at most `max_concurrency`);
- a semaphore bounding the calls in flight, and a `Pacer` spacing call starts to `rate_per_s`;
- retries of connection failures, timeouts, 429 and 503 on the policy's schedule, honouring a
  `Retry-After` up to the cap (`batchgate.retry.upstream_delay`). A call that still fails
  is answered with a 461 (Failed Request) body saying why.

Every attempt of one job carries the same `Idempotency-Key` (`ActionContext.idempotency_key`,
different for a restarted run), so the upstream can drop a duplicate.

Upstream URLs come from the operator's configuration, not from clients, so unlike callbacks
they are not subject to the address guard: an upstream on a private network is the usual case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import orjson
from yarl import URL

from batchgate import tracing
from batchgate.actions.registry import ActionContext, Reply
from batchgate.protocol.errors import FailedRequest
from batchgate.protocol.paths import call_uri
from batchgate.protocol.signing import sign_headers
from batchgate.retry import UPSTREAM_RETRY_STATUSES, RetryPolicy, parse_retry_after, upstream_delay

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_RETRY = RetryPolicy(schedule=(0.5, 2.0, 5.0), retry_after_cap_s=30.0)
SHOWN_BODY_CHARS = 500  # of an upstream's refusal, quoted in the 461 body


@dataclass(frozen=True, kw_only=True)
class UpstreamConfig:
    """One upstream RPC API and the namespaces batchgate forwards to it."""

    name: str
    base_url: str
    namespaces: tuple[str, ...]
    key: str
    secret: str = field(repr=False)
    timeout_s: float = 30.0
    max_concurrency: int = 10
    rate_per_s: float = 0.0  # calls started per second; 0 means no limit
    retry: RetryPolicy = DEFAULT_RETRY
    read_only: tuple[str, ...] = ()  # "namespace.action" of the actions that change nothing


class Pacer:
    """Spaces call starts at least `1 / rate_per_s` apart, with no bursts.

    Each caller books the next free start time, so the waits are a pure function of the times
    asked (`reserve(now)`), testable without a clock.
    """

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._next = float("-inf")

    def reserve(self, now: float) -> float:
        """Seconds the caller waits before it starts; books that start."""
        start = max(now, self._next)
        self._next = start + self.interval_s
        return start - now


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one try of a call got: an answer (`status`), or no answer and why (`error`)."""

    status: int | None
    body: bytes = b""
    retry_after_s: float | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    """A forwarded call, the same on every attempt except for its signature's date."""

    label: str  # "event.inviteContacts for job <asyncId>[3]", for logs
    url: URL
    uri: str  # the path and query as sent, which is what gets signed
    body: bytes
    idempotency_key: str


class Upstream:
    """Forwards calls to one upstream API: `forward` is a `batchgate.actions.Forward`."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._base = URL(config.base_url)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._pacer = Pacer(config.rate_per_s)
        self._session: aiohttp.ClientSession | None = None

    def saturated(self) -> bool:
        """Whether every slot is taken: a call made now would wait for one."""
        return self._slots.locked()

    async def open(self) -> None:
        """Opens the pooled session; run from the app's start-up hooks, inside the event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                trust_env=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, namespace: str, action: str, params: str, ctx: ActionContext) -> Reply:
        """The upstream's answer to one call, or a 461 body once its retries are spent."""
        call = self._call(namespace, action, params, ctx)
        attempt, number = await self._attempt(call), 1
        while (delay := self._retry_delay(attempt, number)) is not None:
            log.warning(
                "upstream %s: %s: attempt %d failed (%s); retrying in %.2f s",
                self.config.name,
                call.label,
                number,
                attempt.error or attempt.status,
                delay,
            )
            await asyncio.sleep(delay)
            attempt, number = await self._attempt(call), number + 1
        return dataclasses.replace(self._reply(attempt, number), attempts=number)

    def _retry_delay(self, attempt: Attempt, number: int) -> float | None:
        return upstream_delay(
            self.config.retry, number, status=attempt.status, retry_after_s=attempt.retry_after_s
        )

    def _call(self, namespace: str, action: str, params: str, ctx: ActionContext) -> Call:
        url, uri = _route(self._base, namespace, action)
        where = f"job {ctx.async_id}[{ctx.job_index}]" if ctx.async_id else "a direct call"
        return Call(
            label=f"{namespace}.{action} for {where}",
            url=url,
            uri=uri,
            body=params.encode(),
            # A direct call has no job to name it: its own random key still covers its retries.
            idempotency_key=ctx.idempotency_key or uuid.uuid4().hex,
        )

    @tracing.upstream_attempt
    async def _attempt(self, call: Call) -> Attempt:
        if self._session is None:
            raise RuntimeError(f"upstream {self.config.name} is not open (the app was not started)")
        async with self._slots:
            if self._pacer.interval_s:  # nothing to book on the hot path when calls are not paced
                await asyncio.sleep(self._pacer.reserve(asyncio.get_running_loop().time()))
            headers = sign_headers(
                key=self.config.key, secret=self.config.secret, uri=call.uri, body=call.body
            )
            headers[IDEMPOTENCY_HEADER] = call.idempotency_key
            tracing.inject(headers)
            try:
                async with self._session.post(
                    call.url, data=call.body, headers=headers, allow_redirects=False
                ) as response:
                    body = await response.read()
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
                    return Attempt(response.status, body, retry_after)
            except TimeoutError:
                return Attempt(None, error=f"did not answer within {self.config.timeout_s:g} s")
            except aiohttp.ClientError as exc:
                return Attempt(None, error=f"could not be reached: {str(exc) or type(exc).__name__}")

    def _reply(self, attempt: Attempt, attempts: int) -> Reply:
        """The answer to pass on: the upstream's own, unless there is none worth passing on."""
        name = self.config.name
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if attempt.status is None:
            return _failed(f"Upstream {name} {attempt.error} ({tries})")
        if attempt.status in UPSTREAM_RETRY_STATUSES:
            return _failed(
                f"Upstream {name} still answered {attempt.status} after {tries}",
                _shown(attempt.body),
            )
        if not _is_json(attempt.body):
            # Results embed each response as JSON, so a proxy's HTML error page cannot pass.
            return _failed(
                f"Upstream {name} answered {attempt.status} with a body that is not JSON",
                _shown(attempt.body),
            )
        return Reply(attempt.status, attempt.body)


@functools.lru_cache(maxsize=1024)  # bounded: a client may name any action of a forwarded namespace
def _route(base: URL, namespace: str, action: str) -> tuple[URL, str]:
    """The URL of an action and the path and query that get signed, built once per action."""
    uri = base.raw_path.rstrip("/") + call_uri(namespace, action)
    return URL(str(base.origin()) + uri, encoded=True), uri


def _failed(message: str, detail: str = "") -> Reply:
    error = FailedRequest(message, additional_messages=[detail] if detail else None)
    return Reply(error.error_code, error.to_json())


def _shown(body: bytes) -> str:
    return body.decode(errors="replace")[:SHOWN_BODY_CHARS]


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True
