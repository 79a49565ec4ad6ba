"""An action's parameter schema, declared by its handler's signature and checked with msgspec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest

from batchgate import ActionContext
from batchgate.actions.schema import ParamsSchema
from batchgate.protocol.errors import PARAM_INVALID, PARAM_MISSING, BadRequest


class Window(msgspec.Struct):
    start: str
    end: str


def invite(
    ctx: ActionContext,
    event: int,
    contacts: list[int],
    note: str | None = None,
    limit: Annotated[int, msgspec.Meta(ge=1)] = 10,
    mode: Literal["email", "sms"] = "email",
    window: Window | None = None,
) -> None: ...


def untyped(name, count=1):  # type: ignore[no-untyped-def]
    """No annotations: any JSON value is accepted."""


def open_ended(event: int, **rest: Any) -> None: ...


def nothing() -> None: ...


SCHEMA = ParamsSchema.of("event.inviteContacts", invite)


def rejected(schema: ParamsSchema, params: dict[str, Any]) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        schema.validate(params)
    return caught.value


def test_valid_params_become_the_handlers_keyword_arguments_with_defaults() -> None:
    assert SCHEMA.validate({"event": 1, "contacts": [1, 2]}) == {
        "event": 1,
        "contacts": [1, 2],
        "note": None,
        "limit": 10,
        "mode": "email",
        "window": None,
    }


def test_a_nested_struct_parameter_is_converted() -> None:
    kwargs = SCHEMA.validate({"event": 1, "contacts": [], "window": {"start": "a", "end": "b"}})
    assert kwargs["window"] == Window("a", "b")


@pytest.mark.parametrize(
    ("params", "missing"),
    [({"contacts": [1]}, "event"), ({"event": 1}, "contacts"), ({}, "event")],
)
def test_a_missing_required_parameter_is_23017(params: dict[str, Any], missing: str) -> None:
    error = rejected(SCHEMA, params)
    assert error.body() == {
        "errorCode": 400,
        "message": f"'{missing}' is required",
        "specificCode": PARAM_MISSING,
    }


@pytest.mark.parametrize(
    ("params", "name", "reason"),
    [
        ({"event": "1", "contacts": []}, "event", "Expected `int`, got `str` - at `$.event`"),
        ({"event": True, "contacts": []}, "event", "Expected `int`, got `bool` - at `$.event`"),
        ({"event": 1, "contacts": [1, "x"]}, "contacts", "Expected `int`, got `str` - at `$.contacts[1]`"),
        ({"event": 1, "contacts": None}, "contacts", "Expected `array`, got `null` - at `$.contacts`"),
        ({"event": 1, "contacts": [], "limit": 0}, "limit", "Expected `int` >= 1 - at `$.limit`"),
        ({"event": 1, "contacts": [], "mode": "fax"}, "mode", "Invalid enum value 'fax' - at `$.mode`"),
        (
            {"event": 1, "contacts": [], "window": {"start": "a"}},
            "window",
            "Object missing required field `end` - at `$.window`",
        ),
    ],
)
def test_a_wrong_parameter_is_23016_with_msgspecs_reason(
    params: dict[str, Any], name: str, reason: str
) -> None:
    error = rejected(SCHEMA, params)
    assert error.body() == {
        "errorCode": 400,
        "message": f"'{name}' does not validate",
        "specificCode": PARAM_INVALID,
        "additionalMessages": [reason],
    }


def test_an_unknown_parameter_is_23016() -> None:
    error = rejected(SCHEMA, {"event": 1, "contacts": [], "colour": "red"})
    assert (error.message, error.specific_code) == ("'colour' does not validate", PARAM_INVALID)
    assert error.additional_messages == ["event.inviteContacts takes no parameter 'colour'"]


def test_ctx_is_not_a_parameter_a_client_can_send() -> None:
    error = rejected(SCHEMA, {"event": 1, "contacts": [], "ctx": {}})
    assert error.message == "'ctx' does not validate"


def test_unannotated_parameters_take_any_json_value() -> None:
    schema = ParamsSchema.of("t.untyped", untyped)
    assert schema.validate({"name": {"any": ["thing"]}}) == {"name": {"any": ["thing"]}, "count": 1}
    assert rejected(schema, {}).message == "'name' is required"


def test_var_keyword_parameters_pass_unknown_names_through_unchecked() -> None:
    schema = ParamsSchema.of("t.open", open_ended)
    assert schema.validate({"event": 1, "extra": [1]}) == {"event": 1, "extra": [1]}
    assert rejected(schema, {"event": "x"}).message == "'event' does not validate"


def test_a_handler_without_parameters_takes_none() -> None:
    schema = ParamsSchema.of("t.nothing", nothing)
    assert schema.validate({}) == {}
    assert rejected(schema, {"x": 1}).message == "'x' does not validate"


def test_a_signature_that_cannot_be_a_schema_is_refused_at_registration() -> None:
    def positional_only(a: int, /) -> None: ...

    def unsafe_default(a: list[int] = [1]) -> None: ...  # noqa: B006 (the point of the test)

    with pytest.raises(ValueError, match="must be passable by keyword"):
        ParamsSchema.of("t.p", positional_only)
    with pytest.raises(ValueError, match="not a valid schema"):
        ParamsSchema.of("t.u", unsafe_default)
