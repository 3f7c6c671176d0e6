"""The mturk provider's calls, each checked by botocore's Stubber against MTurk's API model (names,
types and required members of every request), with MTurk's error answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.stub import ANY, Stubber

from mephisto_dist.errors import ConfigError
from mephisto_dist.providers import SubmittedWork, make_provider
from mephisto_dist.providers.mturk import mapping
from mephisto_dist.providers.mturk.client import SANDBOX_ENDPOINT, RequesterAccess
from mephisto_dist.providers.mturk.provider import _HIT_TYPES as hit_types
from mephisto_dist.providers.mturk.provider import _QUALIFICATION_TYPES as qualification_types
from mephisto_dist.providers.mturk.provider import (
    PAST,
    MTurkProvider,
    MTurkSandboxProvider,
    ProviderCallFailed,
    WorkNotSubmitted,
)

pytestmark = pytest.mark.system

TASK_ARGS = {"task_title": "Rate a sentence", "task_description": "Read and rate", "task_reward": 0.3,
             "task_tags": "rating, text ,", "assignment_duration_in_seconds": 900, "task_lifetime_in_seconds": 7200}
SERVER = "https://tasks.example.org"
QUESTION = mapping.external_question(SERVER)
ARGS = {"requester_name": "lab", "deployment": "prod"}


class TurkStubber(Stubber):
    """A Stubber spoken to in MTurk's operation names (``CreateHIT``), as the API reference writes them."""

    def add_response(self, method: str, service_response: Any, expected_params: Any = None) -> None:
        super().add_response(xform_name(method), service_response, expected_params)

    def add_client_error(self, method: str, *args: Any, **kwargs: Any) -> None:
        super().add_client_error(xform_name(method), *args, **kwargs)


@pytest.fixture(autouse=True)
def fresh_hit_types() -> Iterator[None]:
    """Each test sees MTurk afresh: the process's cache of HIT types starts empty."""
    hit_types.clear()
    qualification_types.clear()
    yield
    hit_types.clear()
    qualification_types.clear()


@pytest.fixture()
def stubbed() -> Iterator[tuple[MTurkProvider, Stubber]]:
    client = boto3.client("mturk", region_name="us-east-1", endpoint_url=SANDBOX_ENDPOINT,
                          aws_access_key_id="AKIDSTUB", aws_secret_access_key="stub-secret")
    built: list[RequesterAccess] = []

    def factory(access: RequesterAccess) -> Any:
        built.append(access)
        return client

    provider = MTurkSandboxProvider(ARGS, client_factory=factory)
    with TurkStubber(client) as stubber:
        yield provider, stubber
        stubber.assert_no_pending_responses()
    assert len(built) <= 1  # the client is built once, on first use


def turk_error(stubber: Stubber, operation: str, turk_code: str, message: str, kind: str = "RequestError") -> None:
    stubber.add_client_error(operation, service_error_code=kind, service_message=message, http_status_code=400,
                             response_meta={}, modeled_fields={"Message": message, "TurkErrorCode": turk_code})


def work(assignment_id: str | None = "ASSIGN1") -> SubmittedWork:
    return SubmittedWork("A1WORKER", "HIT1", {"assignment_id": assignment_id} if assignment_id else {})


def hit(hit_id: str) -> dict[str, Any]:
    return {"HIT": {"HITId": hit_id, "HITTypeId": "TYPE1"}}


def test_building_a_provider_calls_nothing() -> None:
    provider = make_provider("mturk", {"requester_name": "lab"})
    assert provider.provider_type == "mturk" and provider.publishes_instantly is False
    assert provider.worker_url(SERVER, "A1", "x") is None


def test_publish_makes_qualification_types_hit_type_and_one_hit_per_unit(stubbed: Any) -> None:
    provider, stubber = stubbed
    args = {**TASK_ARGS, "block_qualification": "lab-blocked", "qualifications": [
        {"qualification_name": "trained", "comparator": "GreaterThanOrEqualTo", "value": 3},
        {"qualification_name": "lang", "comparator": "In", "value": [1, 2]},
        {"qualification_name": "elsewhere", "comparator": "Exists", "applicable_providers": ["prolific"]}]}
    list_params = {"MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100}
    stubber.add_response("ListQualificationTypes", {"QualificationTypes": [
        {"QualificationTypeId": "QTRAINEDX", "Name": "trained-old"}]}, {**list_params, "Query": "trained"})
    stubber.add_response("CreateQualificationType", {"QualificationType": {"QualificationTypeId": "QTRAINED"}},
                         {"Name": "trained", "QualificationTypeStatus": "Active", "Description": ANY})
    stubber.add_response("ListQualificationTypes", {"QualificationTypes": [
        {"QualificationTypeId": "QLANG", "Name": "lang"}]}, {**list_params, "Query": "lang"})
    stubber.add_response("ListQualificationTypes", {"QualificationTypes": [
        {"QualificationTypeId": "QBLOCK", "Name": "lab-blocked"}]}, {**list_params, "Query": "lab-blocked"})
    stubber.add_response("CreateHITType", {"HITTypeId": "TYPE1"}, {
        "Title": "Rate a sentence", "Description": "Read and rate", "Reward": "0.30", "Keywords": "rating,text",
        "AssignmentDurationInSeconds": 900, "AutoApprovalDelayInSeconds": 5 * 24 * 3600,
        "QualificationRequirements": [
            {"QualificationTypeId": "QTRAINED", "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [3],
             "ActionsGuarded": "Accept"},
            {"QualificationTypeId": "QLANG", "Comparator": "In", "IntegerValues": [1, 2], "ActionsGuarded": "Accept"},
            {"QualificationTypeId": "QBLOCK", "Comparator": "DoesNotExist",
             "ActionsGuarded": "DiscoverPreviewAndAccept"}]})
    for unit_id, hit_id in ((11, "HITA"), (12, "HITB")):
        stubber.add_response("CreateHITWithHITType", hit(hit_id), {
            "HITTypeId": "TYPE1", "MaxAssignments": 1, "LifetimeInSeconds": 7200, "Question": QUESTION,
            "RequesterAnnotation": f"mephisto-dist deployment=prod run=4 unit={unit_id}",
            "UniqueRequestToken": f"launch-{unit_id}"})
    published = provider.publish_units(4, [11, 12], SERVER, args, tokens={11: "launch-11", 12: "launch-12"})
    assert [(p.unit_id, p.provider_unit_id) for p in published] == [(11, "HITA"), (12, "HITB")]


def test_the_hit_type_is_asked_for_once_per_process(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("CreateHITType", {"HITTypeId": "TYPE1"}, ANY_PARAMS)
    for unit_id in (1, 2):
        stubber.add_response("CreateHITWithHITType", hit(f"HIT{unit_id}"), ANY_PARAMS)
        provider.publish_unit(LaunchStub(4, unit_id, f"L{unit_id}"), SERVER, TASK_ARGS)
    other = MTurkSandboxProvider(ARGS, client_factory=lambda access: provider.client())
    stubber.add_response("CreateHITWithHITType", hit("HIT3"), ANY_PARAMS)
    assert other.publish_unit(LaunchStub(4, 3, "L3"), SERVER, TASK_ARGS) == "HIT3"


def test_a_repeated_launch_gets_the_hit_its_token_made(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("CreateHITType", {"HITTypeId": "TYPE1"}, ANY_PARAMS)
    turk_error(stubber, "CreateHITWithHITType", "AWS.MechanicalTurk.HitAlreadyExists",
               "There is already a HIT which exists with the same UniqueRequestToken. The HIT Id is HITFIRST.")
    turk_error(stubber, "CreateHITWithHITType", "AWS.MechanicalTurk.HitAlreadyExists", "duplicate request")
    mark = "mephisto-dist deployment=prod run=4 unit=12"
    stubber.add_response("ListHITs", {"HITs": [{"HITId": "OTHER", "RequesterAnnotation": "someone else"}],
                                      "NextToken": "p2"}, {"MaxResults": 100})
    stubber.add_response("ListHITs", {"HITs": [{"HITId": "HITSECOND", "RequesterAnnotation": mark}]},
                         {"MaxResults": 100, "NextToken": "p2"})
    published = provider.publish_units(4, [11, 12], SERVER, TASK_ARGS)
    assert [p.provider_unit_id for p in published] == ["HITFIRST", "HITSECOND"]


ANY_PARAMS: Any = None  # Stubber: no expectation on the parameters


def test_publish_refuses_a_plain_http_server_before_calling_mturk(stubbed: Any) -> None:
    provider, _ = stubbed
    with pytest.raises(ConfigError, match="must be https://"):
        provider.publish_units(4, [1], "http://tasks.example.org", TASK_ARGS)
    assert "<ExternalURL>http://127.0.0.1:3000/</ExternalURL>" in mapping.external_question("http://127.0.0.1:3000")


def test_other_create_errors_surface_with_mturks_message(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("CreateHITType", {"HITTypeId": "TYPE1"}, ANY_PARAMS)
    turk_error(stubber, "CreateHITWithHITType", "AWS.MechanicalTurk.InsufficientFunds",
               "This Requester has insufficient funds in their account to complete this transaction.")
    with pytest.raises(ProviderCallFailed, match="insufficient funds") as failed:
        provider.publish_units(4, [1], SERVER, TASK_ARGS)
    assert failed.value.turk_code == "AWS.MechanicalTurk.InsufficientFunds"


def test_unpublish_expires_hits_and_ignores_ones_already_gone(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("UpdateExpirationForHIT", {}, {"HITId": "HITA", "ExpireAt": PAST})
    turk_error(stubber, "UpdateExpirationForHIT", "AWS.MechanicalTurk.HITDoesNotExist", "Hit HITB does not exist.")
    provider.unpublish_units(["HITA", "HITB"])
    stubber.add_client_error("UpdateExpirationForHIT", service_error_code="ServiceFault",
                             service_message="internal", http_status_code=500)
    with pytest.raises(ProviderCallFailed, match="internal"):
        provider.unpublish_units(["HITC"])


def assignment(status: str) -> dict[str, Any]:
    return {"Assignment": {"AssignmentId": "ASSIGN1", "WorkerId": "A1WORKER", "AssignmentStatus": status}}


def test_approve_approves_overrides_a_rejection_and_is_idempotent(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("GetAssignment", assignment("Submitted"), {"AssignmentId": "ASSIGN1"})
    stubber.add_response("ApproveAssignment", {}, {"AssignmentId": "ASSIGN1"})
    stubber.add_response("GetAssignment", assignment("Rejected"), {"AssignmentId": "ASSIGN1"})
    stubber.add_response("ApproveAssignment", {}, {"AssignmentId": "ASSIGN1", "OverrideRejection": True})
    stubber.add_response("GetAssignment", assignment("Approved"), {"AssignmentId": "ASSIGN1"})
    for _ in range(3):
        assert provider.approve_work(work(), idempotency_key="approve:1") == "mturk:approved:ASSIGN1"


def test_reject_sends_the_reason_once(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("GetAssignment", assignment("Submitted"), {"AssignmentId": "ASSIGN1"})
    stubber.add_response("RejectAssignment", {}, {"AssignmentId": "ASSIGN1", "RequesterFeedback": "copied text"})
    stubber.add_response("GetAssignment", assignment("Rejected"), {"AssignmentId": "ASSIGN1"})
    provider.reject_work(work(), "copied text", idempotency_key="reject:1")
    provider.reject_work(work(), "copied text", idempotency_key="reject:1")


def test_bonus_carries_its_token_and_a_duplicate_is_success(stubbed: Any) -> None:
    provider, stubber = stubbed
    send = {"WorkerId": "A1WORKER", "AssignmentId": "ASSIGN1", "BonusAmount": "1.50", "Reason": "thorough",
            "UniqueRequestToken": "bonus:7:3"}
    stubber.add_response("GetAssignment", assignment("Approved"), {"AssignmentId": "ASSIGN1"})
    stubber.add_response("SendBonus", {}, send)
    stubber.add_response("GetAssignment", assignment("Approved"), {"AssignmentId": "ASSIGN1"})
    turk_error(stubber, "SendBonus", "AWS.MechanicalTurk.DuplicateRequest", "already sent with this token")
    for _ in range(2):
        assert provider.pay_bonus(work(), 1.5, "thorough", idempotency_key="bonus:7:3").endswith(":1.50")


def test_bonus_is_refused_while_the_assignment_is_not_submitted(stubbed: Any) -> None:
    provider, stubber = stubbed
    with pytest.raises(WorkNotSubmitted, match="no MTurk assignment"):
        provider.pay_bonus(work(None), 1.0, "r", idempotency_key="bonus:1:1")
    turk_error(stubber, "GetAssignment", "AWS.MechanicalTurk.AssignmentDoesNotExist", "Assignment ASSIGN1 does not exist.")
    with pytest.raises(WorkNotSubmitted, match="not submitted yet"):
        provider.pay_bonus(work(), 1.0, "r", idempotency_key="bonus:1:1")
    stubber.add_response("GetAssignment", assignment("Rejected"), {"AssignmentId": "ASSIGN1"})
    with pytest.raises(WorkNotSubmitted, match="Rejected"):
        provider.pay_bonus(work(), 1.0, "r", idempotency_key="bonus:1:1")


def test_block_unblock_grant_revoke_and_notify(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("CreateWorkerBlock", {}, {"WorkerId": "A1BAD", "Reason": "spam"})
    stubber.add_response("DeleteWorkerBlock", {}, {"WorkerId": "A1BAD", "Reason": "appeal upheld"})
    list_params = {"Query": "trained", "MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100}
    stubber.add_response("ListQualificationTypes", {"QualificationTypes": [
        {"QualificationTypeId": "QTRAINED", "Name": "trained"}]}, list_params)
    stubber.add_response("AssociateQualificationWithWorker", {}, {
        "QualificationTypeId": "QTRAINED", "WorkerId": "A1GOOD", "IntegerValue": 4, "SendNotification": False})
    turk_error(stubber, "DisassociateQualificationFromWorker", "AWS.MechanicalTurk.QualificationDoesNotExist", "gone")
    workers = [f"A{i}" for i in range(150)]
    stubber.add_response("NotifyWorkers", {"NotifyWorkersFailureStatuses": [
        {"WorkerId": "A3", "NotifyWorkersFailureCode": "HardFailure"}]},
        {"Subject": "s", "MessageText": "m", "WorkerIds": workers[:100]})
    stubber.add_response("NotifyWorkers", {"NotifyWorkersFailureStatuses": []},
                         {"Subject": "s", "MessageText": "m", "WorkerIds": workers[100:]})
    provider.block_worker("A1BAD", "spam", idempotency_key="block:1")
    provider.unblock_worker("A1BAD", "appeal upheld", idempotency_key="unblock:1")
    provider.grant_qualification("A1GOOD", "trained", 4)
    provider.revoke_qualification("A1GOOD", "trained", "expired")
    assert provider.notify_workers(workers, "s", "m") == ["A3"]


def test_throttling_surfaces_as_a_provider_error(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_client_error("GetAccountBalance", service_error_code="ThrottlingException",
                             service_message="Rate exceeded", http_status_code=400)
    with pytest.raises(ProviderCallFailed, match="ThrottlingException"):
        provider.balance()
    stubber.add_response("GetAccountBalance", {"AvailableBalance": "10000.00"}, {})
    assert provider.balance() == "10000.00"


def test_annotations_tokens_and_access() -> None:
    mark = mapping.annotation("prod", 4, 12)
    assert mapping.parse_annotation(mark) == mapping.HitMark("prod", 4, 12)
    assert mapping.parse_annotation("made by a script") is None and mapping.parse_annotation(None) is None
    assert len(mapping.request_token("x" * 100)) == 64 and mapping.request_token("short") == "short"
    access = RequesterAccess.from_args("mturk_sandbox", {"requester_name": "lab", "aws_profile": "lab"})
    assert access.endpoint == SANDBOX_ENDPOINT and "secret" not in repr(access.as_args())
    with pytest.raises(ConfigError, match="requester_name"):
        RequesterAccess.from_args("mturk", {})


class LaunchStub:
    """The launcher's one-unit launch as the provider sees it (run, unit, launch id)."""

    def __init__(self, run_id: int, unit_id: int, launch_id: str) -> None:
        self.run_id, self.unit_id, self.launch_id = run_id, unit_id, launch_id


def test_publish_unit_uses_the_launch_id_as_token_and_mark(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("CreateHITType", {"HITTypeId": "TYPE1"}, ANY_PARAMS)
    stubber.add_response("CreateHITWithHITType", hit("HITL"), {
        "HITTypeId": "TYPE1", "MaxAssignments": 1, "LifetimeInSeconds": 7200, "Question": QUESTION,
        "RequesterAnnotation": "mephisto-dist deployment=prod run=4 unit=9 launch=L-77",
        "UniqueRequestToken": "L-77"})
    turk_error(stubber, "CreateHITWithHITType", "AWS.MechanicalTurk.HitAlreadyExists",
               "There is already a HIT which exists with the same UniqueRequestToken. The HIT Id is HITL.")
    launch = LaunchStub(4, 9, "L-77")
    assert provider.publish_unit(launch, SERVER, TASK_ARGS) == "HITL"
    assert provider.publish_unit(launch, SERVER, TASK_ARGS) == "HITL"  # a re-sent launch
    assert mapping.parse_annotation("mephisto-dist deployment=prod run=4 unit=9 launch=L-77") == \
        mapping.HitMark("prod", 4, 9, "L-77")


def test_unpublish_launches_finds_their_hits_by_our_mark(stubbed: Any) -> None:
    provider, stubber = stubbed
    stubber.add_response("ListHITs", {"HITs": [
        {"HITId": "MINE", "RequesterAnnotation": "mephisto-dist deployment=prod run=4 unit=9 launch=L-1"},
        {"HITId": "OTHERDEPLOY", "RequesterAnnotation": "mephisto-dist deployment=dev run=4 unit=9 launch=L-1"},
        {"HITId": "FOREIGN", "RequesterAnnotation": "made by hand"},
        {"HITId": "OLDLAUNCH", "RequesterAnnotation": "mephisto-dist deployment=prod run=4 unit=9 launch=L-0"}]},
        {"MaxResults": 100})
    stubber.add_response("UpdateExpirationForHIT", {}, {"HITId": "MINE", "ExpireAt": PAST})
    provider.unpublish_launches([LaunchStub(4, 9, "L-1"), LaunchStub(4, 10, "L-2")])
    provider.unpublish_launches([])  # nothing asked, nothing listed


def test_hits_not_held_are_those_without_pending_or_submitted_work(stubbed: Any) -> None:
    provider, stubber = stubbed

    def counts(hit_id: str, pending: int, completed: int) -> dict[str, Any]:
        return {"HIT": {"HITId": hit_id, "NumberOfAssignmentsPending": pending,
                        "NumberOfAssignmentsCompleted": completed}}

    stubber.add_response("GetHIT", counts("HELD", 1, 0), {"HITId": "HELD"})
    stubber.add_response("GetHIT", counts("RETURNED", 0, 0), {"HITId": "RETURNED"})
    stubber.add_response("GetHIT", counts("SUBMITTED", 0, 1), {"HITId": "SUBMITTED"})
    turk_error(stubber, "GetHIT", "AWS.MechanicalTurk.HITDoesNotExist", "Hit DELETED does not exist.")
    assert provider.hits_not_held(["HELD", "RETURNED", "SUBMITTED", "DELETED"]) == ["RETURNED", "DELETED"]
