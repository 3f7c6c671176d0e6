"""Mephisto 1.1.1's own MTurk helpers against a real mturk-local process through boto3.

``mephisto/abstractions/providers/mturk/mturk_utils.py`` (used by ``mephisto scripts mturk cleanup``, the
pre-run cleanup and the status scripts) and ``MTurkUnit.get_status`` talk to MTurk in particular ways. The
functions below make the same calls with the same parameters and the same paging loops (written here, not
copied), so mturk-local answers them as MTurk does:
- ListHITs is paged with ``MaxResults=100`` and ``NextToken`` read from every page that held HITs, until an
  empty page;
- a qualification type is looked up by name with ``Query=name, MustBeRequestable=True`` and
  ``MustBeOwnedByCaller`` True then False, reading the first page only, and created when not found (a
  creation refused because the name exists is recognised by the start of its message);
- a HIT is disposed by DeleteHIT, else expired by ``UpdateExpirationForHIT(ExpireAt=datetime(2015, 1, 1))``;
- a unit's status is read from GetHIT's ``HITStatus`` and ``NumberOfAssignmentsAvailable``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.mturk_local_process import client, mturk_local
from tests.test_mturk_local import accepted, submit

pytestmark = pytest.mark.system

QUALIFICATION_TYPE_EXISTS_MESSAGE = "You have already created a QualificationType with this name."
LOCALE = "00000000000000000071"
THIRTY_ONE_DAYS_S = 60 * 60 * 24 * 31


@pytest.fixture()
def turk(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with mturk_local(tmp_path / "state.sqlite3", tmp_path / "mturk-local.log") as url:
        yield url, client(url)


# -- Mephisto 1.1.1's call sequences ----------------------------------------------------------------------


def outstanding_hits(mturk: Any) -> dict[str, list[dict[str, Any]]]:
    """As ``get_outstanding_hits``: NextToken is read from every page that held HITs."""
    page = mturk.list_hits(MaxResults=100)
    every = list(page["HITs"])
    while len(page["HITs"]) > 0:
        page = mturk.list_hits(MaxResults=100, NextToken=page["NextToken"])
        every += page["HITs"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for hit in every:
        by_type.setdefault(hit["HITTypeId"], []).append(hit)
    return by_type


def expire_and_dispose(mturk: Any, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As ``expire_and_dispose_hits``: delete, else expire; the HITs that stay are returned."""
    kept = []
    for hit in hits:
        try:
            mturk.delete_hit(HITId=hit["HITId"])
        except Exception as error:  # noqa: BLE001 - Mephisto catches every failure here
            mturk.update_expiration_for_hit(HITId=hit["HITId"], ExpireAt=datetime(2015, 1, 1))
            kept.append({**hit, "dispose_exception": error})
    return kept


def find_qualification(mturk: Any, name: str, must_be_owned: bool = True) -> tuple[bool, str | None]:
    """As ``find_qualification``: the first page of two searches, the caller's own types first."""
    response = mturk.list_qualification_types(Query=name, MustBeRequestable=True, MustBeOwnedByCaller=True)
    for qualification in response["QualificationTypes"]:
        if qualification["Name"] == name:
            return True, str(qualification["QualificationTypeId"])
    response = mturk.list_qualification_types(Query=name, MustBeRequestable=True, MustBeOwnedByCaller=False)
    for qualification in response["QualificationTypes"]:
        if qualification["Name"] == name:
            return (not must_be_owned), str(qualification["QualificationTypeId"])
    return True, None


def find_or_create_qualification(mturk: Any, name: str, description: str, must_be_owned: bool = True) -> str | None:
    """As ``find_or_create_qualification``."""
    usable, found = find_qualification(mturk, name, must_be_owned)
    if found is not None:
        return found if usable else None
    try:
        response = mturk.create_qualification_type(Name=name, Description=description,
                                                   QualificationTypeStatus="Active")
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message")
        if message is not None and message.startswith(QUALIFICATION_TYPE_EXISTS_MESSAGE):
            usable, found = find_qualification(mturk, name, must_be_owned)
            assert found is not None, "Qualification exists, but could not be found?"
            return found if usable else None
        raise
    return str(response["QualificationType"]["QualificationTypeId"])


def create_hit_type(mturk: Any, title: str, qualifications: list[dict[str, Any]],
                    tags: tuple[str, ...] = ("rating", "text")) -> str:
    """As ``create_hit_type`` on a live (not sandbox) endpoint: the default locale requirement is added."""
    requirements = [*qualifications, {
        "QualificationTypeId": LOCALE, "Comparator": "In", "ActionsGuarded": "DiscoverPreviewAndAccept",
        "LocaleValues": [{"Country": c} for c in ("US", "CA", "GB", "AU", "NZ")]}]
    response = mturk.create_hit_type(AutoApprovalDelayInSeconds=7 * 24 * 3600, AssignmentDurationInSeconds=1800,
                                     Reward=str(0.3), Title=title, Keywords=",".join(tags),
                                     Description="Rate one sentence", QualificationRequirements=requirements)
    return str(response["HITTypeId"])


def create_hit_with_hit_type(mturk: Any, page_url: str, hit_type_id: str) -> str:
    """As ``create_hit_with_hit_type``: an ExternalQuestion whose URL has its ampersands escaped."""
    question = ('<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
                f'2006-07-14/ExternalQuestion.xsd"><ExternalURL>{page_url.replace("&", "&amp;")}</ExternalURL>'
                "<FrameHeight>0</FrameHeight></ExternalQuestion>")
    response = mturk.create_hit_with_hit_type(HITTypeId=hit_type_id, MaxAssignments=1,
                                              LifetimeInSeconds=THIRTY_ONE_DAYS_S, Question=question)
    return str(response["HIT"]["HITId"])


def unit_status(mturk: Any, hit_id: str) -> str:
    """As ``MTurkUnit.get_status`` reads GetHIT."""
    hit = mturk.get_hit(HITId=hit_id)["HIT"]
    if hit["HITStatus"] == "Assignable":
        return "launched"
    if hit["HITStatus"] == "Unassignable":
        return "assigned"
    if hit["HITStatus"] in ("Reviewable", "Reviewing"):
        return "expired" if hit["NumberOfAssignmentsAvailable"] != 0 else "completed"
    assert hit["HITStatus"] == "Disposed", hit["HITStatus"]
    return "disposed"


# -- the tests --------------------------------------------------------------------------------------------


def test_cleanup_lists_more_than_100_hits_and_disposes_them_in_passes(turk: tuple[str, Any]) -> None:
    url, mturk = turk
    first, second = create_hit_type(mturk, "Rate a sentence", []), create_hit_type(mturk, "Rate a photo", [])
    made = {create_hit_with_hit_type(mturk, f"https://task.example.org/?unit={i}&run=1", first) for i in range(120)}
    made |= {create_hit_with_hit_type(mturk, f"https://task.example.org/?unit={i}&run=2", second) for i in range(15)}
    held_hit, done_hit = sorted(made)[:2]
    held = accepted(url, held_hit, "A1HOLDER")
    done = accepted(url, done_hit, "A1FINISHER")
    assert submit(url, done, answer="4").status_code == 200

    outstanding = outstanding_hits(mturk)
    assert {k: len(v) for k, v in outstanding.items()} == {first: 120, second: 15}
    every = [h for hits in outstanding.values() for h in hits]
    assert {h["HITId"] for h in every} == made
    # The cleanup script's "(o)ld" choice compares CreationTime with an aware "now".
    cutoff = datetime.now(every[0]["CreationTime"].tzinfo) - timedelta(days=14)
    assert [h for h in every if h["CreationTime"] < cutoff] == []
    broken = [h for h in every if h["NumberOfAssignmentsCompleted"] == 0 and h["HITStatus"] != "Reviewable"]
    assert len(broken) == 134 and done_hit not in {h["HITId"] for h in broken}

    # First pass: nothing can be deleted while assignable; everything is expired instead.
    assert len(expire_and_dispose(mturk, every)) == 135
    # Second pass: expired HITs go; the held one and the one with unreviewed work stay.
    kept = expire_and_dispose(mturk, [h for hits in outstanding_hits(mturk).values() for h in hits])
    assert {h["HITId"] for h in kept} == {held_hit, done_hit}
    mturk.approve_assignment(AssignmentId=done, OverrideRejection=False)
    assert submit(url, held, answer="5").status_code == 200
    mturk.approve_assignment(AssignmentId=held, OverrideRejection=False)
    assert expire_and_dispose(mturk, [h for hits in outstanding_hits(mturk).values() for h in hits]) == []
    assert outstanding_hits(mturk) == {}


def test_qualifications_are_found_by_name_or_made_once(turk: tuple[str, Any]) -> None:
    _, mturk = turk
    description = "Qualification required for Mephisto-launched tasks"
    # Types whose names hold the wanted one fill more than a first page of results.
    for i in range(12):
        mturk.create_qualification_type(Name=f"mephisto_qual_{i}", Description=f"about mephisto_qual {i}",
                                        QualificationTypeStatus="Active")
    assert find_qualification(mturk, "mephisto_qual") == (True, None)
    made = find_or_create_qualification(mturk, "mephisto_qual", description, False)
    assert made is not None
    assert find_qualification(mturk, "mephisto_qual") == (True, made)
    assert find_or_create_qualification(mturk, "mephisto_qual", description, False) == made
    with pytest.raises(ClientError) as exists:
        mturk.create_qualification_type(Name="mephisto_qual", Description=description,
                                        QualificationTypeStatus="Active")
    assert exists.value.response["Error"]["Message"].startswith(QUALIFICATION_TYPE_EXISTS_MESSAGE)
    # The search is a text search: every type mentioning the words, paged like any listing.
    listed = [t["Name"] for page in mturk.get_paginator("list_qualification_types").paginate(
        Query="mephisto_qual", MustBeRequestable=True, MustBeOwnedByCaller=True, PaginationConfig={"PageSize": 5})
        for t in page["QualificationTypes"]]
    assert listed[0] == "mephisto_qual" and sorted(listed[1:]) == sorted(f"mephisto_qual_{i}" for i in range(12))
    assert find_qualification(mturk, "mephisto%qual") == (True, None)  # not a wildcard

    mturk.associate_qualification_with_worker(QualificationTypeId=made, WorkerId="A1PASSED", IntegerValue=1,
                                              SendNotification=False)
    granted = mturk.list_workers_with_qualification_type(QualificationTypeId=made, MaxResults=100)
    assert [q["WorkerId"] for q in granted["Qualifications"]] == ["A1PASSED"]
    mturk.disassociate_qualification_from_worker(QualificationTypeId=made, WorkerId="A1PASSED", Reason="")
    assert mturk.list_workers_with_qualification_type(QualificationTypeId=made)["NumResults"] == 0
    mturk.delete_qualification_type(QualificationTypeId=made)
    assert find_qualification(mturk, "mephisto_qual") == (True, None)


def test_status_review_and_payment_helpers(turk: tuple[str, Any]) -> None:
    url, mturk = turk
    balance = float(mturk.get_account_balance()["AvailableBalance"])
    qualification = find_or_create_qualification(mturk, "onboarded", "passed onboarding", False)
    hit_type = create_hit_type(mturk, "Rate a sentence", [
        {"QualificationTypeId": qualification, "Comparator": "Exists", "ActionsGuarded": "DiscoverPreviewAndAccept"}])
    worked, untaken = (create_hit_with_hit_type(mturk, "https://task.example.org/?a=1&b=2", hit_type)
                       for _ in range(2))
    mturk.associate_qualification_with_worker(QualificationTypeId=qualification, WorkerId="A1WORKER",
                                              IntegerValue=1, SendNotification=False)
    assert unit_status(mturk, worked) == "launched"
    assignment = accepted(url, worked, "A1WORKER")
    assert unit_status(mturk, worked) == "assigned"
    assert submit(url, assignment, answer="3").status_code == 200
    assert unit_status(mturk, worked) == "completed"
    mturk.update_expiration_for_hit(HITId=untaken, ExpireAt=datetime(2015, 1, 1))
    assert unit_status(mturk, untaken) == "expired"

    assignments = mturk.list_assignments_for_hit(HITId=worked).get("Assignments", [])
    assert [(a["AssignmentId"], a["HITId"], a["WorkerId"]) for a in assignments] == [(assignment, worked, "A1WORKER")]
    assert mturk.get_assignment(AssignmentId=assignment)["Assignment"]["AssignmentStatus"] == "Submitted"
    mturk.approve_assignment(AssignmentId=assignment, OverrideRejection=False)
    assert float(mturk.get_account_balance()["AvailableBalance"]) >= 0.5 * 1.2  # pay_bonus's balance check
    mturk.send_bonus(WorkerId="A1WORKER", BonusAmount=str(0.5), AssignmentId=assignment, Reason="great work",
                     UniqueRequestToken="bonus-1")
    assert float(mturk.get_account_balance()["AvailableBalance"]) == pytest.approx(balance - 0.3 - 0.5)

    sent = mturk.notify_workers(Subject="Thanks", MessageText="Thank you", WorkerIds=["A1WORKER"])
    assert sent["NotifyWorkersFailureStatuses"] == []
    unknown = mturk.notify_workers(Subject="Hi", MessageText="Hello", WorkerIds=["A1STRANGER"])
    assert unknown["NotifyWorkersFailureStatuses"][0]["NotifyWorkersFailureMessage"]

    mturk.create_worker_block(WorkerId="A1SPAMMER", Reason="copied answers")
    assert "A1SPAMMER" in [b["WorkerId"] for b in mturk.list_worker_blocks(MaxResults=100)["WorkerBlocks"]]
    mturk.delete_worker_block(WorkerId="A1SPAMMER", Reason="appeal granted")
    assert "A1SPAMMER" not in [b["WorkerId"] for b in mturk.list_worker_blocks(MaxResults=100)["WorkerBlocks"]]
