"""What time alone changes at mturk-local (abandonment, auto-approval, the 24-hour life of a
UniqueRequestToken, a HIT's lifetime), with the service's clock passed in instead of waited for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mephisto_dist.mturk_local import worker
from mephisto_dist.mturk_local.app import TARGET_PREFIX, Service
from mephisto_dist.mturk_local.store import Store
from tests.mturk_local_process import external_question


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def service(tmp_path: Path, clock: Clock) -> Service:
    return Service(Store(tmp_path / "state.sqlite3"), rate_per_s=0, clock=clock)


def call(service: Service, operation: str, **params: Any) -> dict[str, Any]:
    status, body = service.call(TARGET_PREFIX + operation, json.dumps(params).encode())
    if status != 200:
        raise AssertionError(f"{operation}: {body}")
    return body


def refused(service: Service, operation: str, **params: Any) -> dict[str, Any]:
    status, body = service.call(TARGET_PREFIX + operation, json.dumps(params).encode())
    assert status == 400, body
    return body


def new_hit(service: Service, **extra: Any) -> str:
    params = {"Title": "t", "Description": "d", "Reward": "0.40", "AssignmentDurationInSeconds": 120,
              "AutoApprovalDelayInSeconds": 3600, "LifetimeInSeconds": 600,
              "Question": external_question("https://task.example.org/"), **extra}
    return str(call(service, "CreateHIT", **params)["HIT"]["HITId"])


def take(service: Service, hit_id: str, worker_id: str) -> str:
    view = service.worker_call(lambda db, now: worker.accept(db, hit_id, worker_id, now, "http://turk"))
    return str(view["AssignmentId"])


def hit(service: Service, hit_id: str) -> dict[str, Any]:
    return call(service, "GetHIT", HITId=hit_id)["HIT"]


def test_an_assignment_held_past_its_duration_is_abandoned(service: Service, clock: Clock) -> None:
    hit_id = new_hit(service)
    assignment = take(service, hit_id, "A1SLOW")
    clock.now += 119
    assert hit(service, hit_id)["HITStatus"] == "Unassignable"
    clock.now += 2
    assert hit(service, hit_id)["HITStatus"] == "Assignable"
    with pytest.raises(worker.WorkerRefusal, match="abandoned"):
        service.worker_call(lambda db, now: worker.submit(db, assignment, {"a": "1"}, now))
    take(service, hit_id, "A1SLOW")  # an abandoned HIT can be taken again, by anyone


def test_submitted_work_is_approved_and_paid_after_the_auto_approval_delay(service: Service, clock: Clock) -> None:
    hit_id = new_hit(service)
    assignment = take(service, hit_id, "A1PATIENT")
    service.worker_call(lambda db, now: worker.submit(db, assignment, {"a": "1"}, now))
    clock.now += 3599
    assert call(service, "GetAssignment", AssignmentId=assignment)["Assignment"]["AssignmentStatus"] == "Submitted"
    clock.now += 2
    assert call(service, "GetAssignment", AssignmentId=assignment)["Assignment"]["AssignmentStatus"] == "Approved"
    assert call(service, "GetAccountBalance")["AvailableBalance"] == "9999.60"


def test_a_hit_expires_at_the_end_of_its_lifetime(service: Service, clock: Clock) -> None:
    hit_id = new_hit(service)
    clock.now += 601
    view = hit(service, hit_id)
    # MTurk keeps counting the untaken assignment: Mephisto reads it to tell an expired HIT from a done one.
    assert (view["HITStatus"], view["NumberOfAssignmentsAvailable"]) == ("Reviewable", 1)
    with pytest.raises(worker.WorkerRefusal, match="Reviewable"):
        take(service, hit_id, "A1LATE")


def test_a_request_token_deduplicates_for_24_hours(service: Service, clock: Clock) -> None:
    new_hit(service, UniqueRequestToken="tok-1")
    assert refused(service, "CreateHIT", Title="t", Description="d", Reward="0.40", AssignmentDurationInSeconds=120,
                   LifetimeInSeconds=600, Question=external_question("https://task.example.org/"),
                   UniqueRequestToken="tok-1")["TurkErrorCode"] == "AWS.MechanicalTurk.HitAlreadyExists"
    clock.now += 24 * 3600 + 1
    new_hit(service, UniqueRequestToken="tok-1")


def test_payments_stop_at_an_empty_balance(tmp_path: Path, clock: Clock) -> None:
    from decimal import Decimal

    poor = Service(Store(tmp_path / "poor.sqlite3", initial_balance=Decimal("0.50")), rate_per_s=0, clock=clock)
    hit_id = new_hit(poor, MaxAssignments=2)
    first, second = take(poor, hit_id, "A1ONE"), take(poor, hit_id, "A1TWO")
    for assignment in (first, second):
        poor.worker_call(lambda db, now, a=assignment: worker.submit(db, a, {"a": "1"}, now))
    call(poor, "ApproveAssignment", AssignmentId=first)
    assert refused(poor, "ApproveAssignment", AssignmentId=second)["TurkErrorCode"] == \
        "AWS.MechanicalTurk.InsufficientFunds"
    assert call(poor, "GetAccountBalance")["AvailableBalance"] == "0.10"
