"""Every exception batchgate raises, and the wire errors a client sees.

    BatchgateError                       the root: catch this to catch anything of ours
     ├── WireError                       answered to the client as the error body, HTTP status = errorCode
     │    ├── BadRequest (400)
     │    ├── Unauthorized (401)
     │    │    └── StaleRequest (401/23005)   the request's date is outside the window
     │    ├── Forbidden (403)
     │    ├── NotFound (404)
     │    ├── MethodNotAllowed (405)
     │    ├── PayloadTooLarge (413)
     │    ├── FailedRequest (461)
     │    ├── KeyRevoked (463)
     │    └── InternalError (500)
     ├── StoreError                      batchgate.store: the database failed
     │    └── StoreUnavailable           it could not be reached or refused the write
     ├── LeaseLost                       batchgate.worker: the batch was taken away from this worker
     ├── UnsafeAddress                   batchgate.netguard: a callback URL may not be called
     ├── InvalidSignature                batchgate.webhooks: a callback's signature does not verify
     ├── ConfigError (also ValueError)   batchgate.config: batchgate.toml is not valid
     ├── AdminError (also ValueError)    batchgate.admin: what an operator asked cannot be done
     │    └── AdminNotFound              what the operator named does not exist
     └── ClientError                     batchgate.client: a call made with the Python client failed
          ├── ApiError                   the server answered with an error body
          └── Unreachable                the server could not be reached

    MissingDriver (an ImportError)       batchgate.store.postgres: asyncpg is not installed

Each class's docstring is its default message. The specific codes below are the wire's, named once.
"""

from __future__ import annotations

from typing import Any

import orjson

# Specific codes of the envelope and of the batch namespace.
STALE_REQUEST = 23005
PARAM_INVALID = 23016
PARAM_MISSING = 23017
NOT_SAVED = 24091
INCORRECT_JOB_FORMAT = 24092
EMPTY_JOB_PARAMETER = 24093
BATCH_NOT_FOUND = 24105
BATCH_NOT_COMPLETED = 24114
RESULTS_NOT_FOUND = 24115
TOO_MANY_JOBS = 24448

# batchgate's own specific codes (docs/protocol.md §6): its extensions of the protocol.
REPLAYED_REQUEST = 29001  # 401: the same signed request was already used to change something
TOO_MANY_OPEN_BATCHES = 29010  # 429: the account's batches not yet finished are at its limit
RESULTS_QUOTA = 29011  # 429: the account's results hold as many bytes as it may
RATE_LIMITED = 29012  # 429: the account's requests per second
REPOST_LIMIT = 29013  # 429: the batch was reposted as often as it may be within the hour
SERVER_BUSY = 29014  # 429: the process holds as many request bodies as it may
IDEMPOTENCY_CONFLICT = 29020  # 400: the Idempotency-Key was used before with another request
JOB_CANCELLED = 29030  # a job's response (461): the batch was cancelled before the job ran
JOB_TIMED_OUT = 29031  # a job's response (461): the action did not answer within its timeout
DEPENDENCY_FAILED = 29032  # a job's response (461): a job it waits for failed
REFERENCE_UNRESOLVED = 29033  # a job's response (461): a reference in its params finds nothing
BATCH_FINISHED = 29040  # 400: cancel of a batch that has already finished
NOTHING_TO_RETRY = 29041  # 400: restart of failed jobs only, and none failed


class BatchgateError(Exception):
    """batchgate failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "Error").strip().rstrip(".")
        super().__init__(self.message)


class WireError(BatchgateError):
    """Internal server error."""

    error_code = 500

    def __init__(
        self,
        message: str | None = None,
        *,
        specific_code: int | None = None,
        additional_messages: list[str] | None = None,
        error_code: int | None = None,
    ) -> None:
        super().__init__(message)
        if error_code is not None:  # an action may answer with any errorCode of the wire
            self.error_code = error_code
        self.specific_code = specific_code
        self.additional_messages = additional_messages

    def body(self) -> dict[str, Any]:
        """The wire error body: errorCode, message, and specificCode and additionalMessages when set."""
        body: dict[str, Any] = {"errorCode": self.error_code, "message": self.message}
        if self.specific_code is not None:
            body["specificCode"] = self.specific_code
        if self.additional_messages:
            body["additionalMessages"] = self.additional_messages
        return body

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())


class BadRequest(WireError):
    """Bad request."""

    error_code = 400


class Unauthorized(WireError):
    """Unauthorized."""

    error_code = 401


class StaleRequest(Unauthorized):
    """Request is stale."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, specific_code=STALE_REQUEST)


class Forbidden(WireError):
    """Forbidden."""

    error_code = 403


class NotFound(WireError):
    """Not found."""

    error_code = 404


class MethodNotAllowed(WireError):
    """Method not allowed: every call is a POST."""

    error_code = 405


class PayloadTooLarge(WireError):
    """The request body is too large."""

    error_code = 413


class TooManyRequests(WireError):
    """Too many requests."""

    error_code = 429

    def __init__(self, message: str, *, specific_code: int, retry_after_s: float) -> None:
        super().__init__(message, specific_code=specific_code)
        self.retry_after_s = retry_after_s


class FailedRequest(WireError):
    """The request failed."""

    error_code = 461


class KeyRevoked(WireError):
    """Key revoked."""

    error_code = 463


class InternalError(WireError):
    """Internal server error."""

    error_code = 500


def job_error(message: str, specific_code: int) -> bytes:
    """A job's response of batchgate's own making (a cancel, a timeout, a failed dependency): 461."""
    return FailedRequest(message, specific_code=specific_code).to_json()


NOT_RUN_CANCELLED = job_error("The batch was cancelled before this job ran", JOB_CANCELLED)
STOPPED_CANCELLED = job_error("The batch was cancelled while this job ran", JOB_CANCELLED)


def is_error_body(value: Any) -> bool:
    """Whether a decoded JSON value is a wire error body (a job's response, say)."""
    return isinstance(value, dict) and isinstance(value.get("errorCode"), int) and "message" in value


def missing_param(name: str) -> BadRequest:
    return BadRequest(f"'{name}' is required", specific_code=PARAM_MISSING)


def invalid_param(name: str, *reasons: str) -> BadRequest:
    return BadRequest(
        f"'{name}' does not validate", specific_code=PARAM_INVALID, additional_messages=list(reasons) or None
    )
