"""Errors in MTurk's shape: ``RequestError`` (the caller's fault) and ``ServiceFault`` (ours), each
with a ``TurkErrorCode``, and ``ThrottlingException`` for a caller above the configured rate."""

from __future__ import annotations

import time


class TurkFault(Exception):
    kind = "RequestError"
    http_status = 400

    def __init__(self, turk_code: str, message: str) -> None:
        super().__init__(message)
        self.turk_code = turk_code
        self.message = message

    def body(self) -> dict[str, str]:
        # MTurk appends the server's clock in milliseconds to every message.
        return {"__type": self.kind, "Message": f"{self.message} ({int(time.time() * 1000)})",
                "TurkErrorCode": self.turk_code}


class RequestFault(TurkFault):
    kind = "RequestError"


class ServiceFault(TurkFault):
    kind = "ServiceFault"
    http_status = 500


class Throttled(TurkFault):
    kind = "ThrottlingException"

    def __init__(self) -> None:
        super().__init__("AWS.MechanicalTurk.ThrottlingException", "Rate exceeded")

    def body(self) -> dict[str, str]:
        return {"__type": self.kind, "message": self.message}


def invalid(parameter: str, value: object, why: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.ParameterValidationError",
                        f"Value ({value}) for parameter {parameter} is invalid. {why}")


def hit_missing(hit_id: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.HITDoesNotExist", f"Hit {hit_id} does not exist.")


def assignment_missing(assignment_id: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.AssignmentDoesNotExist",
                        f"Assignment {assignment_id} does not exist.")


def qualification_type_missing(type_id: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.QualificationTypeDoesNotExist",
                        f"QualificationType {type_id} does not exist.")


def wrong_assignment_state(*allowed: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.InvalidAssignmentState",
                        f"This operation can be called with a status of: {', '.join(allowed)}")
