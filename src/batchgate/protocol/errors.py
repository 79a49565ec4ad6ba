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


class FailedRequest(WireError):
    """The request failed."""

    error_code = 461


class KeyRevoked(WireError):
    """Key revoked."""

    error_code = 463


class InternalError(WireError):
    """Internal server error."""

    error_code = 500


def is_error_body(value: Any) -> bool:
    """Whether a decoded JSON value is a wire error body (a job's response, say)."""
    return isinstance(value, dict) and isinstance(value.get("errorCode"), int) and "message" in value


def missing_param(name: str) -> BadRequest:
    return BadRequest(f"'{name}' is required", specific_code=PARAM_MISSING)


def invalid_param(name: str, *reasons: str) -> BadRequest:
    return BadRequest(
        f"'{name}' does not validate", specific_code=PARAM_INVALID, additional_messages=list(reasons) or None
    )
