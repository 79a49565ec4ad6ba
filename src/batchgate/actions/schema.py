"""An action's parameter schema, declared by its handler's signature (FastAPI style).

    @app.action("event", "inviteContacts")
    def invite(event: int, contacts: list[int], note: str | None = None) -> dict[str, Any]: ...

Each parameter is one field of a msgspec Struct built once, at registration; a call's params
are converted to it in one `msgspec.convert` and the handler gets the converted values. A
parameter without a default is required, one without an annotation takes any JSON value, and
`**params` accepts (and passes through, unchecked) names the signature does not list. `ctx`
is not a parameter: it is the `ActionContext` handed to handlers that declare it.

Errors are the wire's (docs/protocol.md §6): 23017 `'id' is required` for a missing parameter, 23016
`'id' does not validate` (msgspec's reason in `additionalMessages`) for a wrong or unknown one.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect
import msgspec.structs

from batchgate.protocol.errors import BadRequest, invalid_param, missing_param

CONTEXT_PARAMETER = "ctx"
_FIRST_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


def split_path(message: str) -> tuple[str, str]:
    """msgspec's "Expected `int` - at `$.contacts[1]`" as ("Expected `int`", ".contacts[1]").

    msgspec ends a validation message with the path of the offending value; "" when it has none.
    """
    text, found, path = message.rpartition(" - at `$")
    return (text, path.removesuffix("`")) if found else (message, "")


@dataclass(frozen=True, slots=True)
class ParamsSchema:
    """Validates a call's params into the keyword arguments of one handler."""

    label: str  # "event.inviteContacts", for messages
    struct: type[msgspec.Struct] | None  # None when the handler declares no parameters
    types: dict[str, Any]
    required: tuple[str, ...]
    takes_any: bool  # the handler has **params

    @classmethod
    def of(cls, label: str, handler: Callable[..., Any]) -> ParamsSchema:
        """The schema of `handler`'s signature; ValueError when it cannot be one."""
        parameters = inspect.signature(handler).parameters.values()
        hints = _type_hints(label, handler)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        takes_any = False
        for parameter in parameters:
            if parameter.kind is parameter.VAR_KEYWORD:
                takes_any = True
            elif parameter.name != CONTEXT_PARAMETER:
                fields.append(_field(label, parameter, hints.get(parameter.name, Any)))
        required = tuple(field[0] for field in fields if len(field) == 2)
        return cls(label, _struct(label, fields), {f[0]: f[1] for f in fields}, required, takes_any)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """The handler's keyword arguments, or the BadRequest (23017 / 23016) a client gets."""
        if self.struct is None and self.takes_any:  # only **params: nothing to check
            return dict(params)
        for name in self.required:
            if name not in params:
                raise missing_param(name)
        extra = {name: value for name, value in params.items() if name not in self.types}
        if extra and not self.takes_any:
            name = next(iter(extra))
            raise invalid_param(name, f"{self.label} takes no parameter '{name}'")
        if self.struct is None:
            return extra
        declared = {name: value for name, value in params.items() if name in self.types}
        try:
            converted = msgspec.convert(declared, type=self.struct)
        except msgspec.ValidationError as exc:
            raise self._invalid(declared, str(exc)) from None
        return {**extra, **msgspec.structs.asdict(converted)}

    def _invalid(self, declared: dict[str, Any], message: str) -> BadRequest:
        """23016 naming the parameter msgspec's message points at."""
        match = _FIRST_FIELD.match(split_path(message)[1])
        if match is not None and match.group(1) in declared:
            return invalid_param(match.group(1), message)
        # Unreached with msgspec as it is (missing fields are caught before), but never a 500.
        return BadRequest(f"The parameters of {self.label} do not validate", additional_messages=[message])


def _type_hints(label: str, handler: Callable[..., Any]) -> dict[str, Any]:
    target = handler if inspect.isfunction(handler) or inspect.ismethod(handler) else type(handler).__call__
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # a NameError for a type only imported under TYPE_CHECKING, say
        raise ValueError(f"{label}: cannot resolve the handler's annotations: {exc}") from exc


def _field(
    label: str, parameter: inspect.Parameter, annotation: Any
) -> tuple[str, Any] | tuple[str, Any, Any]:
    if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
        raise ValueError(f"{label}: parameter '{parameter.name}' must be passable by keyword")
    if parameter.default is parameter.empty:
        return (parameter.name, annotation)
    return (parameter.name, annotation, parameter.default)


def _struct(label: str, fields: list[tuple[str, Any] | tuple[str, Any, Any]]) -> type[msgspec.Struct] | None:
    if not fields:
        return None
    try:
        # kw_only: a required parameter may follow an optional one, as keyword-only ones may.
        struct = msgspec.defstruct(f"{label} params", fields, kw_only=True)
        msgspec.inspect.type_info(struct)  # fails now, not at the first call, on a type msgspec cannot check
    except (TypeError, ValueError, NameError) as exc:
        raise ValueError(f"{label}: the handler's parameters are not a valid schema: {exc}") from exc
    return struct
