"""Checking a request the way MTurk does before any rule runs: against the operation's shape in
botocore's copy of MTurk's API model (required members, types, lengths, ranges, patterns), and the
value rules every operation shares (amounts, durations)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from botocore.model import OperationModel, ServiceModel, StringShape, StructureShape
from botocore.session import get_session
from botocore.validate import ParamValidator

from mephisto_dist.mturk_local.faults import RequestFault, invalid

MIN_DURATION_S = 30
MAX_DURATION_S = 365 * 24 * 3600
MAX_AUTO_APPROVAL_DELAY_S = 30 * 24 * 3600


@cache
def service_model() -> ServiceModel:
    return get_session().get_service_model("mturk")


def operation(name: str) -> OperationModel:
    if name not in service_model().operation_names:
        raise RequestFault("AWS.MechanicalTurk.UnknownOperation", f"Operation {name} is not supported.")
    return service_model().operation_model(name)


def check_shape(op: OperationModel, params: Any) -> None:
    if not isinstance(params, dict):
        raise RequestFault("AWS.MechanicalTurk.ParameterValidationError", "The request body must be a JSON object.")
    shape = op.input_shape
    if shape is None:
        return
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise RequestFault("AWS.MechanicalTurk.ParameterValidationError",
                           report.generate_report().replace("\n", " "))
    _check_patterns(shape, params)


def _check_patterns(shape: StructureShape, params: dict[str, Any]) -> None:
    for name, member in shape.members.items():
        pattern = member.metadata.get("pattern")
        value = params.get(name)
        if isinstance(member, StringShape) and pattern and isinstance(value, str) \
                and not re.fullmatch(pattern, value):
            raise invalid(name, value, f"It must match {pattern}.")


def amount(parameter: str, text: str, *, minimum: Decimal = Decimal("0.01")) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise invalid(parameter, text, "It must be an amount in US dollars, such as 0.50.") from None
    if value < minimum or value != value.quantize(Decimal("0.01")):
        raise invalid(parameter, text, f"It must be at least {minimum} with at most two decimals.")
    return value.quantize(Decimal("0.01"))


def seconds(parameter: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise invalid(parameter, value, f"It must be between {low} and {high} seconds.")
    return value


def text(parameter: str, value: str | None, max_chars: int, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise invalid(parameter, value, "It is required.")
        return value
    if len(value) > max_chars:
        raise invalid(parameter, f"{value[:20]}...", f"It must be at most {max_chars} characters.")
    return value
