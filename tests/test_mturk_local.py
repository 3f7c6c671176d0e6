"""mturk-local against boto3, as a requester script uses MTurk: a real service process, boto3's own
request validation and response parsing, and the worker JSON API for the worker's side."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.mturk_local_process import client, external_question, mturk_local

pytestmark = pytest.mark.system

TASK_URL = "https://task.example.org/run/1"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("mturk-local")
    with mturk_local(directory / "state.sqlite3", directory / "mturk-local.log") as url:
        yield url


@pytest.fixture()
def mturk(service: str) -> Any:
    return client(service)


def make_hit(mturk: Any, *, max_assignments: int = 1, lifetime_s: int = 3600, annotation: str = "test",
             requirements: list[dict[str, Any]] | None = None, reward: str = "0.50") -> str:
    type_id = mturk.create_hit_type(
        Title="Rate a sentence", Description="Read one sentence and rate it", Reward=reward,
        AssignmentDurationInSeconds=600, AutoApprovalDelayInSeconds=3600, Keywords="rating,text",
        QualificationRequirements=requirements or [])["HITTypeId"]
    hit = mturk.create_hit_with_hit_type(HITTypeId=type_id, MaxAssignments=max_assignments,
                                         LifetimeInSeconds=lifetime_s, Question=external_question(TASK_URL),
                                         RequesterAnnotation=annotation)["HIT"]
    return str(hit["HITId"])


def accept(service: str, hit_id: str, worker_id: str) -> httpx.Response:
    return httpx.post(f"{service}/api/hits/{hit_id}/accept", json={"workerId": worker_id})


def submit(service: str, assignment_id: str, **fields: str) -> httpx.Response:
    return httpx.post(f"{service}/mturk/externalSubmit", data={"assignmentId": assignment_id, **fields},
                      headers={"accept": "application/json"})


def accepted(service: str, hit_id: str, worker_id: str) -> str:
    response = accept(service, hit_id, worker_id)
    assert response.status_code == 200, response.text
    return str(response.json()["AssignmentId"])


def turk_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("TurkErrorCode"))


def status(mturk: Any, hit_id: str) -> str:
    return str(mturk.get_hit(HITId=hit_id)["HIT"]["HITStatus"])


def test_hit_moves_through_mturks_statuses_and_is_deleted_once_reviewed(service: str, mturk: Any) -> None:
    hit_id = make_hit(mturk, max_assignments=2)
    assert status(mturk, hit_id) == "Assignable"
    first = accepted(service, hit_id, "A1FIRST")
    view = accept(service, hit_id, "A1SECOND").json()
    assert view["url"].startswith(TASK_URL + "?")
    assert f"assignmentId={view['AssignmentId']}" in view["url"] and "turkSubmitTo=http" in view["url"]
    assert status(mturk, hit_id) == "Unassignable"
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    assert (hit["NumberOfAssignmentsPending"], hit["NumberOfAssignmentsAvailable"]) == (2, 0)
    # The same worker cannot take a second assignment of one HIT.
    assert accept(service, hit_id, "A1FIRST").status_code == 409
    assert submit(service, first, rating="4").json()["AssignmentStatus"] == "Submitted"
    assert status(mturk, hit_id) == "Unassignable"
    assert submit(service, view["AssignmentId"], rating="2").status_code == 200
    assert status(mturk, hit_id) == "Reviewable"
    with pytest.raises(mturk.exceptions.RequestError) as refused:
        mturk.delete_hit(HITId=hit_id)
    assert "neither approved nor rejected" in str(refused.value)
    assignments = mturk.list_assignments_for_hit(HITId=hit_id)["Assignments"]
    assert {a["AssignmentStatus"] for a in assignments} == {"Submitted"}
    assert "<FreeText>4</FreeText>" in next(a["Answer"] for a in assignments if a["AssignmentId"] == first)
    for assignment in assignments:
        mturk.approve_assignment(AssignmentId=assignment["AssignmentId"])
    mturk.delete_hit(HITId=hit_id)
    assert status(mturk, hit_id) == "Disposed"
    assert hit_id not in _all_hit_ids(mturk)
    with pytest.raises(mturk.exceptions.RequestError, match="Reviewable"):
        mturk.delete_hit(HITId=hit_id)


def test_delete_refuses_an_assignable_hit_and_expiry_by_a_past_time(service: str, mturk: Any) -> None:
    hit_id = make_hit(mturk)
    with pytest.raises(mturk.exceptions.RequestError) as refused:
        mturk.delete_hit(HITId=hit_id)
    assert turk_code(refused.value) == "AWS.MechanicalTurk.InvalidHITState"
    held = make_hit(mturk)
    assignment = accepted(service, held, "A1HOLDER")
    for hit in (hit_id, held):
        mturk.update_expiration_for_hit(HITId=hit, ExpireAt=datetime(2015, 1, 1, tzinfo=UTC))
    assert status(mturk, hit_id) == "Reviewable"
    # A worker who holds an assignment of an expired HIT may still finish it.
    assert status(mturk, held) == "Unassignable"
    listed = {h["HITId"] for h in httpx.get(f"{service}/api/hits").json()["HITs"]}
    assert hit_id not in listed and held not in listed
    assert accept(service, hit_id, "A1LATE").status_code == 409
    assert submit(service, assignment, done="yes").status_code == 200
    assert status(mturk, held) == "Reviewable"
    mturk.delete_hit(HITId=hit_id)
    # Extending an expired HIT makes it assignable again.
    mturk.update_expiration_for_hit(HITId=held, ExpireAt=datetime.now(UTC) + timedelta(hours=1))
    assert status(mturk, held) == "Reviewable"  # its one assignment is submitted


def test_unique_request_token_makes_one_hit(service: str, mturk: Any) -> None:
    type_id = mturk.create_hit_type(Title="t", Description="d", Reward="0.10",
                                    AssignmentDurationInSeconds=60)["HITTypeId"]
    assert mturk.create_hit_type(Title="t", Description="d", Reward="0.10",
                                 AssignmentDurationInSeconds=60)["HITTypeId"] == type_id
    before = httpx.get(f"{service}/api/stats").json()["Rows"]["hit"]
    args = {"HITTypeId": type_id, "LifetimeInSeconds": 600, "Question": external_question(TASK_URL),
            "UniqueRequestToken": "launch-7-unit-3"}
    hit_id = mturk.create_hit_with_hit_type(**args)["HIT"]["HITId"]
    with pytest.raises(mturk.exceptions.RequestError) as again:
        mturk.create_hit_with_hit_type(**args)
    assert turk_code(again.value) == "AWS.MechanicalTurk.HitAlreadyExists"
    assert hit_id in str(again.value)
    assert httpx.get(f"{service}/api/stats").json()["Rows"]["hit"] == before + 1


def test_list_hits_pages_as_mturk_does(tmp_path: Path) -> None:
    """Every page with results carries a NextToken (MTurk does not look ahead); the page after the last row
    is empty and carries none. MaxResults is 1 to 100; a token serves only the listing that handed it out."""
    with mturk_local(tmp_path / "paging.sqlite3", tmp_path / "log") as url:
        mturk = client(url)
        made = [make_hit(mturk, annotation=f"unit-{i}") for i in range(23)]
        pages, token = [], None
        while True:
            page = mturk.list_hits(MaxResults=10, **({"NextToken": token} if token else {}))
            pages.append(len(page["HITs"]))
            assert page["NumResults"] == len(page["HITs"])
            token = page.get("NextToken")
            assert (token is None) == (page["NumResults"] == 0)
            if token is None:
                break
        assert pages == [10, 10, 3, 0]
        assert mturk.list_hits()["NumResults"] == 10
        paginated = [h["HITId"] for p in mturk.get_paginator("list_hits").paginate(PaginationConfig={"PageSize": 7})
                     for h in p["HITs"]]
        assert paginated == made
        with pytest.raises(mturk.exceptions.RequestError, match="NextToken"):
            mturk.list_hits(NextToken="not-a-token")
        with pytest.raises(mturk.exceptions.RequestError, match="MaxResults"):
            mturk.list_hits(MaxResults=101)
        blocks_token = mturk.list_hits(MaxResults=1)["NextToken"]
        with pytest.raises(mturk.exceptions.RequestError, match="NextToken"):
            mturk.list_worker_blocks(NextToken=blocks_token)


def test_approve_reject_override_and_bonus_rules(service: str, mturk: Any) -> None:
    balance = float(mturk.get_account_balance()["AvailableBalance"])
    hit_id = make_hit(mturk, max_assignments=2, reward="0.75")
    held = accepted(service, hit_id, "A1PAYEE")
    with pytest.raises(mturk.exceptions.RequestError) as early:
        mturk.send_bonus(WorkerId="A1PAYEE", AssignmentId=held, BonusAmount="1.00", Reason="great",
                         UniqueRequestToken="bonus-early")
    assert turk_code(early.value) == "AWS.MechanicalTurk.AssignmentDoesNotExist"
    submit(service, held, answer="x")
    with pytest.raises(mturk.exceptions.RequestError, match="not done by this worker"):
        mturk.send_bonus(WorkerId="A1OTHER", AssignmentId=held, BonusAmount="1.00", Reason="great")
    mturk.reject_assignment(AssignmentId=held, RequesterFeedback="did not read the sentence")
    with pytest.raises(mturk.exceptions.RequestError, match="Submitted, Approved"):
        mturk.send_bonus(WorkerId="A1PAYEE", AssignmentId=held, BonusAmount="1.00", Reason="great")
    with pytest.raises(mturk.exceptions.RequestError, match="OverrideRejection"):
        mturk.approve_assignment(AssignmentId=held)
    with pytest.raises(mturk.exceptions.RequestError, match="status of: Submitted"):
        mturk.reject_assignment(AssignmentId=held, RequesterFeedback="again")
    mturk.approve_assignment(AssignmentId=held, OverrideRejection=True, RequesterFeedback="sorry")
    assert mturk.get_assignment(AssignmentId=held)["Assignment"]["AssignmentStatus"] == "Approved"
    with pytest.raises(mturk.exceptions.RequestError, match="status of: Submitted"):
        mturk.approve_assignment(AssignmentId=held)
    bonus = {"WorkerId": "A1PAYEE", "AssignmentId": held, "BonusAmount": "1.25", "Reason": "thorough",
             "UniqueRequestToken": "bonus:1:1"}
    mturk.send_bonus(**bonus)
    with pytest.raises(mturk.exceptions.RequestError) as twice:
        mturk.send_bonus(**bonus)
    assert turk_code(twice.value) == "AWS.MechanicalTurk.DuplicateRequest"
    with pytest.raises(mturk.exceptions.RequestError, match="BonusAmount"):
        mturk.send_bonus(**{**bonus, "BonusAmount": "0.001", "UniqueRequestToken": "other"})
    payments = mturk.list_bonus_payments(AssignmentId=held)["BonusPayments"]
    assert [(p["BonusAmount"], p["Reason"]) for p in payments] == [("1.25", "thorough")]
    assert mturk.list_bonus_payments(HITId=hit_id)["NumResults"] == 1
    assert float(mturk.get_account_balance()["AvailableBalance"]) == pytest.approx(balance - 0.75 - 1.25)


def test_qualifications_guard_accepting_and_blocks_refuse_workers(service: str, mturk: Any) -> None:
    qual = mturk.create_qualification_type(Name="trained-raters", Description="passed training",
                                           QualificationTypeStatus="Active")["QualificationType"]
    with pytest.raises(mturk.exceptions.RequestError) as dup:
        mturk.create_qualification_type(Name="trained-raters", Description="x", QualificationTypeStatus="Active")
    assert turk_code(dup.value) == "AWS.MechanicalTurk.QualificationTypeAlreadyExists"
    qid = qual["QualificationTypeId"]
    requirement = {"QualificationTypeId": qid, "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [3]}
    hit_id = make_hit(mturk, max_assignments=3, requirements=[requirement])
    assert accept(service, hit_id, "A1NOVICE").status_code == 403
    mturk.associate_qualification_with_worker(QualificationTypeId=qid, WorkerId="A1NOVICE", IntegerValue=2)
    assert accept(service, hit_id, "A1NOVICE").status_code == 403
    mturk.associate_qualification_with_worker(QualificationTypeId=qid, WorkerId="A1EXPERT", IntegerValue=5)
    assert accept(service, hit_id, "A1EXPERT").status_code == 200
    granted = mturk.list_workers_with_qualification_type(QualificationTypeId=qid)["Qualifications"]
    assert {(q["WorkerId"], q["IntegerValue"]) for q in granted} == {("A1NOVICE", 2), ("A1EXPERT", 5)}
    mturk.disassociate_qualification_from_worker(QualificationTypeId=qid, WorkerId="A1NOVICE", Reason="x")
    revoked = mturk.list_workers_with_qualification_type(QualificationTypeId=qid, Status="Revoked")
    assert [q["WorkerId"] for q in revoked["Qualifications"]] == ["A1NOVICE"]
    with pytest.raises(mturk.exceptions.RequestError):
        mturk.disassociate_qualification_from_worker(QualificationTypeId=qid, WorkerId="A1NOVICE")
    mturk.create_worker_block(WorkerId="A1SPAMMER", Reason="copy-pasted answers")
    mturk.associate_qualification_with_worker(QualificationTypeId=qid, WorkerId="A1SPAMMER", IntegerValue=9)
    assert accept(service, hit_id, "A1SPAMMER").status_code == 403
    assert {"WorkerId": "A1SPAMMER", "Reason": "copy-pasted answers"} in mturk.list_worker_blocks()["WorkerBlocks"]
    mturk.delete_worker_block(WorkerId="A1SPAMMER")
    assert accept(service, hit_id, "A1SPAMMER").status_code == 200
    assert qid in [t["QualificationTypeId"] for t in mturk.list_qualification_types(
        Query="trained", MustBeRequestable=False, MustBeOwnedByCaller=True)["QualificationTypes"]]
    mturk.delete_qualification_type(QualificationTypeId=qid)
    with pytest.raises(mturk.exceptions.RequestError, match="does not exist"):
        mturk.get_qualification_type(QualificationTypeId=qid)


def test_notify_workers_reaches_only_workers_who_worked_here(service: str, mturk: Any) -> None:
    hit_id = make_hit(mturk)
    accepted(service, hit_id, "A1NOTIFIED")
    result = mturk.notify_workers(Subject="New batch", MessageText="More HITs tomorrow",
                                  WorkerIds=["A1NOTIFIED", "A1STRANGER"])
    failures = result["NotifyWorkersFailureStatuses"]
    assert [(f["WorkerId"], f["NotifyWorkersFailureCode"]) for f in failures] == [("A1STRANGER", "HardFailure")]
    inbox = httpx.get(f"{service}/api/workers/A1NOTIFIED/messages").json()["Notifications"]
    assert [n["subject"] for n in inbox] == ["New batch"]


def test_returned_assignment_makes_the_hit_assignable_again(service: str, mturk: Any) -> None:
    hit_id = make_hit(mturk)
    assignment = accepted(service, hit_id, "A1QUITTER")
    assert status(mturk, hit_id) == "Unassignable"
    assert httpx.post(f"{service}/api/assignments/{assignment}/return", json={"workerId": "A1OTHER"}).status_code == 403
    assert httpx.post(f"{service}/api/assignments/{assignment}/return", json={"workerId": "A1QUITTER"}).status_code == 200
    assert status(mturk, hit_id) == "Assignable"
    assert submit(service, assignment, x="1").status_code == 409
    assert hit_id in {h["HITId"] for h in httpx.get(f"{service}/api/hits?workerId=A1QUITTER").json()["HITs"]}


def test_requests_are_checked_as_mturk_checks_them(service: str, mturk: Any) -> None:
    with pytest.raises(botocore.exceptions.ParamValidationError):
        mturk.create_hit(Description="d", Reward="0.1", AssignmentDurationInSeconds=60, LifetimeInSeconds=60)
    base = {"Title": "t", "Description": "d", "Reward": "0.10", "AssignmentDurationInSeconds": 60,
            "LifetimeInSeconds": 600, "Question": external_question(TASK_URL)}
    for bad, where in [({"LifetimeInSeconds": 10}, "LifetimeInSeconds"), ({"Reward": "ten"}, "Reward"),
                       ({"Question": external_question("http://task.example.org/")}, "https"),
                       ({"Question": "<not xml"}, "XML"), ({"Title": "x" * 129}, "Title")]:
        with pytest.raises(mturk.exceptions.RequestError, match=where):
            mturk.create_hit(**{**base, **bad})
    # A caller that is not boto3 gets the same checks from the service itself.
    raw = httpx.post(service, content=json.dumps({"Description": "d"}),
                     headers={"X-Amz-Target": "MTurkRequesterServiceV20170117.CreateHIT",
                              "Content-Type": "application/x-amz-json-1.1"})
    assert raw.status_code == 400
    assert raw.json()["__type"] == "RequestError" and "Title" in raw.json()["Message"]
    unknown = httpx.post(service, content=b"{}", headers={"X-Amz-Target": "MTurkRequesterServiceV20170117.Nope"})
    assert unknown.status_code == 400 and unknown.json()["TurkErrorCode"] == "AWS.MechanicalTurk.UnknownOperation"


def test_throttles_above_its_rate_and_boto3_retries(tmp_path: Path) -> None:
    with mturk_local(tmp_path / "rate.sqlite3", tmp_path / "log", rate=2) as url:
        impatient = client(url)
        codes = []
        for _ in range(8):
            try:
                impatient.get_account_balance()
                codes.append("ok")
            except botocore.exceptions.ClientError as error:
                codes.append(error.response["Error"]["Code"])
        assert "ThrottlingException" in codes and "ok" in codes
        patient = client(url, retries=8)
        for _ in range(6):
            assert patient.get_account_balance()["AvailableBalance"] == "10000.00"


def test_state_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    with mturk_local(db, tmp_path / "log") as url:
        hit_id = make_hit(client(url))
        assignment = accepted(url, hit_id, "A1DURABLE")
    with mturk_local(db, tmp_path / "log") as url:
        assert submit(url, assignment, answer="kept").status_code == 200
        assert status(client(url), hit_id) == "Reviewable"


def _all_hit_ids(mturk: Any) -> set[str]:
    return {h["HITId"] for page in mturk.get_paginator("list_hits").paginate() for h in page["HITs"]}


def test_reviewable_hits_are_listed_and_marked_reviewing(tmp_path: Path) -> None:
    with mturk_local(tmp_path / "review.sqlite3", tmp_path / "log") as url:
        mturk = client(url)
        done = [make_hit(mturk) for _ in range(3)]
        open_hit = make_hit(mturk)
        assignments = [accepted(url, hit_id, "A1REVIEWER") for hit_id in done]
        for assignment in assignments:
            submit(url, assignment, answer="y")
        pages = [h["HITId"] for page in mturk.get_paginator("list_reviewable_hits").paginate(
            PaginationConfig={"PageSize": 2}) for h in page["HITs"]]
        assert pages == done and open_hit not in pages
        with pytest.raises(mturk.exceptions.RequestError, match="Assignable"):
            mturk.update_hit_review_status(HITId=open_hit)
        mturk.update_hit_review_status(HITId=done[0])
        assert status(mturk, done[0]) == "Reviewing"
        assert [h["HITId"] for h in mturk.list_reviewable_hits(Status="Reviewing")["HITs"]] == [done[0]]
        mturk.update_hit_review_status(HITId=done[0], Revert=True)
        assert status(mturk, done[0]) == "Reviewable"
        # A HIT being reviewed is deleted as a Reviewable one is: once its work is approved or rejected.
        mturk.update_hit_review_status(HITId=done[1])
        with pytest.raises(mturk.exceptions.RequestError, match="approve or reject"):
            mturk.delete_hit(HITId=done[1])
        mturk.approve_assignment(AssignmentId=assignments[1])
        mturk.delete_hit(HITId=done[1])
        assert status(mturk, done[1]) == "Disposed"


def test_bad_service_options_are_refused_in_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, needle in [(["--port", str(port)], "Address already in use"),
                             (["--db", "/proc/no/such/dir/state.sqlite3"], "cannot open"),
                             (["--rate", "-1"], "must not be negative"), (["--balance", "lots"], "not an amount")]:
            done = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "mturk-local",
                                   "--db", str(tmp_path / "s.sqlite3"), *args], capture_output=True, text=True,
                                  timeout=60, check=False)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr
