"""Wire errors: every failure a client sees is one of these, sent as SPEC.md's error body.

    WireError
     ├── BadRequest (400)          NotFound (404)        MethodNotAllowed (405)
     ├── Unauthorized (401)        Forbidden (403)       PayloadTooLarge (413)
     ├── FailedRequest (461)       InternalError (500)
     └── ...                       (any errorCode of SPEC.md §1 through WireError itself)

The HTTP status of the response is the errorCode (SPEC.md decision 1).
"""

from __future__ import annotations

from typing import Any

import orjson

# Specific codes of SPEC.md, named once.
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


class WireError(Exception):
    """An error answered to the client as a wire error body."""

    error_code = 500

    def __init__(
        self,
        message: str | None = None,
        *,
        specific_code: int | None = None,
        additional_messages: list[str] | None = None,
        error_code: int | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "Error").strip().rstrip(".")
        if error_code is not None:
            self.error_code = error_code
        self.specific_code = specific_code
        self.additional_messages = additional_messages
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The error body of SPEC.md §1."""
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


class InternalError(WireError):
    """Internal server error."""

    error_code = 500


def missing_param(name: str) -> BadRequest:
    return BadRequest(f"'{name}' is required", specific_code=PARAM_MISSING)


def invalid_param(name: str, *reasons: str) -> BadRequest:
    return BadRequest(
        f"'{name}' does not validate", specific_code=PARAM_INVALID, additional_messages=list(reasons) or None
    )
