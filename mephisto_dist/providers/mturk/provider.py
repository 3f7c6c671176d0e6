"""MTurk through boto3 behind the CrowdProvider contract. The client is built lazily, once, by an
injected factory (tests hand in botocore's Stubber-wrapped client); every MTurk error reaches the caller
as a :class:`ProviderCallFailed` carrying MTurk's own message."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import botocore.exceptions
from botocore import xform_name

from mephisto_dist.errors import MephistoDistError, ServiceError
from mephisto_dist.providers import PublishedUnit, SubmittedWork
from mephisto_dist.providers.mturk import mapping
from mephisto_dist.providers.mturk.client import RequesterAccess, build_client

ClientFactory = Callable[[RequesterAccess], Any]


class Launch(Protocol):
    """One launch of one unit (the launcher's ``UnitLaunch``): its id is the HIT's UniqueRequestToken."""

    @property
    def run_id(self) -> int: ...
    @property
    def unit_id(self) -> int: ...
    @property
    def launch_id(self) -> str: ...
PAST = datetime(2015, 1, 1, tzinfo=UTC)  # an ExpireAt in the past expires a HIT at once
_HIT_ID_IN_MESSAGE = re.compile(r"HIT Id is ([A-Z0-9]+)")
# A run's HIT type per account and properties, kept for the process: every launch of a run would
# otherwise spend provider calls (and rate) asking MTurk for the HIT type it already has.
_HIT_TYPES: dict[tuple[str, str | None, str], str] = {}
_QUALIFICATION_TYPES: dict[tuple[str, str | None, str], str] = {}


class ProviderCallFailed(ServiceError):
    """MTurk refused or failed a call; the message is MTurk's own."""

    def __init__(self, operation: str, code: str, turk_code: str | None, message: str) -> None:
        super().__init__(f"MTurk {operation} failed ({turk_code or code}): {message}")
        self.operation = operation
        self.code = code
        self.turk_code = turk_code
        self.mturk_message = message


class WorkNotSubmitted(MephistoDistError):
    """A payment asked for before MTurk holds the worker's submission."""


class MTurkProvider:
    """The live marketplace: real workers, real payments."""

    provider_type = "mturk"
    is_marketplace = True
    is_sandbox = False
    # MTurk's commission on rewards and bonuses (HITs with 10 or more assignments pay 20% more; a unit's
    # HIT here has one assignment).
    fee_rate = 0.20
    overrides_rejections = True
    is_hit_based = True
    is_study_based = False
    syncs_qualifications = True
    publishes_instantly = False

    def __init__(self, provider_args: Mapping[str, Any] | None = None, *,
                 client_factory: ClientFactory = build_client) -> None:
        self._args = dict(provider_args or {})
        self._client_factory = client_factory
        self._client: Any = None

    @classmethod
    def from_args(cls, provider_args: Mapping[str, Any]) -> MTurkProvider:
        return cls(provider_args)

    @property
    def access(self) -> RequesterAccess:
        return RequesterAccess.from_args(self.provider_type, self._args)

    @property
    def deployment(self) -> str:
        return str(self._args.get("deployment") or "default")

    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory(self.access)
        return self._client

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One MTurk call by its API name, errors translated."""
        method = getattr(self.client(), xform_name(operation))
        try:
            return dict(method(**params))
        except botocore.exceptions.ClientError as error:
            response = error.response
            raise ProviderCallFailed(operation, str(response.get("Error", {}).get("Code")),
                                     response.get("TurkErrorCode"),
                                     str(response.get("Error", {}).get("Message", error))) from None
        except botocore.exceptions.BotoCoreError as error:
            raise ProviderCallFailed(operation, type(error).__name__, None, str(error)) from None

    def pages(self, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged List operation, following NextToken."""
        token: str | None = None
        while True:
            page = self.call(operation, **params, **({"NextToken": token} if token else {}))
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    # -- account --------------------------------------------------------------------------------------

    def balance(self) -> str:
        return str(self.call("GetAccountBalance")["AvailableBalance"])

    def account_check(self) -> str:
        return f"balance ${self.balance()}"

    # -- publishing -----------------------------------------------------------------------------------

    def publish_units(self, run_id: int, unit_ids: Sequence[int], server_url: str, task_args: Mapping[str, Any],
                      *, tokens: Mapping[int, str] | None = None) -> list[PublishedUnit]:
        """One HIT per unit, each created with a UniqueRequestToken (the launch's token, else the unit's):
        a repeated launch finds the HIT the first one made instead of making a second."""
        if not unit_ids:
            return []
        question = mapping.external_question(server_url)
        hit_type_id = self.hit_type_for(task_args)
        published = []
        for unit_id in unit_ids:
            token = mapping.request_token((tokens or {}).get(unit_id) or f"{self.deployment}-{run_id}-{unit_id}")
            hit_id = self.create_hit(hit_type_id, question, mapping.lifetime_s(task_args),
                                     mapping.annotation(self.deployment, run_id, unit_id), token)
            published.append(PublishedUnit(unit_id, hit_id))
        return published

    def publish_unit(self, launch: Launch, server_url: str, task_args: Mapping[str, Any]) -> str:
        """One HIT for one launch, its launch id as the UniqueRequestToken and in our mark: a re-sent
        launch gets back the HIT the first send made."""
        return self.create_hit(self.hit_type_for(task_args), mapping.external_question(server_url),
                               mapping.lifetime_s(task_args),
                               mapping.annotation(self.deployment, launch.run_id, launch.unit_id, launch.launch_id),
                               mapping.request_token(launch.launch_id))

    def unpublish_launches(self, launches: Sequence[Launch]) -> None:
        """Expire whatever HITs these launches made though their HIT ids were never recorded (the sender
        died mid-call): found by our mark, since MTurk cannot be asked by token without making a HIT."""
        wanted = {(launch.run_id, launch.unit_id, launch.launch_id) for launch in launches}
        if not wanted:
            return
        found = []
        for hit in self.pages("ListHITs", "HITs", MaxResults=100):
            mark = mapping.parse_annotation(hit.get("RequesterAnnotation"))
            if mark is not None and mark.deployment == self.deployment and \
                    (mark.run_id, mark.unit_id, mark.launch_id) in wanted:
                found.append(str(hit["HITId"]))
        self.unpublish_units(found)

    def create_hit(self, hit_type_id: str, question: str, lifetime_s: int, annotation: str, token: str) -> str:
        try:
            hit = self.call("CreateHITWithHITType", HITTypeId=hit_type_id, MaxAssignments=1,
                            LifetimeInSeconds=lifetime_s, Question=question, RequesterAnnotation=annotation,
                            UniqueRequestToken=token)["HIT"]
            return str(hit["HITId"])
        except ProviderCallFailed as failed:
            if failed.turk_code != "AWS.MechanicalTurk.HitAlreadyExists":
                raise
            found = _HIT_ID_IN_MESSAGE.search(failed.mturk_message)
            if found:
                return found.group(1)
            return self.find_hit(annotation) or _raise(failed)

    def find_hit(self, annotation: str) -> str | None:
        """The HIT carrying our mark, by listing every page (the token's answer named no HIT)."""
        for hit in self.pages("ListHITs", "HITs", MaxResults=100):
            if hit.get("RequesterAnnotation") == annotation:
                return str(hit["HITId"])
        return None

    def hit_type_for(self, task_args: Mapping[str, Any]) -> str:
        """The run's HIT type, with its qualification types made first; MTurk hands back the same HIT type
        for the same properties, so asking again is harmless."""
        requirements = mapping.applicable(task_args.get("qualifications") or [], self.provider_type)
        type_ids = {r.qualification_name: self.qualification_type_id(r.qualification_name) for r in requirements}
        block = task_args.get("block_qualification")
        block_id = self.qualification_type_id(str(block)) if block else None
        params = mapping.hit_type(task_args, mapping.qualification_requirements(requirements, type_ids, block_id))
        key = (self.access.endpoint, self.access.profile, repr(sorted(params.items())))
        if key not in _HIT_TYPES:
            _HIT_TYPES[key] = str(self.call("CreateHITType", **params)["HITTypeId"])
        return _HIT_TYPES[key]

    def qualification_type_id(self, name: str, *, create: bool = True) -> str:
        """The requester's qualification type of this name (made if missing and ``create``), kept for
        the process once known."""
        key = (self.access.endpoint, self.access.profile, name)
        if key not in _QUALIFICATION_TYPES:
            _QUALIFICATION_TYPES[key] = self._find_or_make_qualification_type(name, create=create)
        return _QUALIFICATION_TYPES[key]

    def _find_or_make_qualification_type(self, name: str, *, create: bool) -> str:
        for found in self.pages("ListQualificationTypes", "QualificationTypes", Query=name, MustBeRequestable=False,
                                MustBeOwnedByCaller=True, MaxResults=100):
            if found.get("Name") == name:
                return str(found["QualificationTypeId"])
        if not create:
            raise ProviderCallFailed("ListQualificationTypes", "NotFound", None,
                                     f"no qualification type named {name!r}")
        try:
            made = self.call("CreateQualificationType", Name=name, QualificationTypeStatus="Active",
                             Description=f"mephisto-dist qualification {name}")
        except ProviderCallFailed as failed:  # made by another process a moment ago
            if failed.turk_code == "AWS.MechanicalTurk.QualificationTypeAlreadyExists":
                return self._find_or_make_qualification_type(name, create=False)
            raise
        return str(made["QualificationType"]["QualificationTypeId"])

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        """Expire the HITs (a HIT already gone is fine); a worker holding one may still finish it."""
        for hit_id in provider_unit_ids:
            try:
                self.call("UpdateExpirationForHIT", HITId=hit_id, ExpireAt=PAST)
            except ProviderCallFailed as failed:
                if failed.turk_code not in ("AWS.MechanicalTurk.HITDoesNotExist", "AWS.MechanicalTurk.InvalidHITState"):
                    raise

    def hits_not_held(self, hit_ids: Sequence[str]) -> list[str]:
        """HITs with no assignment pending or submitted: their worker returned or abandoned them."""
        gone = []
        for hit_id in hit_ids:
            try:
                hit = self.call("GetHIT", HITId=hit_id)["HIT"]
            except ProviderCallFailed as failed:
                if failed.turk_code == "AWS.MechanicalTurk.HITDoesNotExist":
                    gone.append(hit_id)
                    continue
                raise
            if not hit.get("NumberOfAssignmentsPending") and not hit.get("NumberOfAssignmentsCompleted"):
                gone.append(hit_id)
        return gone

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        return None

    # -- review and pay -------------------------------------------------------------------------------

    def _assignment(self, work: SubmittedWork, doing: str) -> dict[str, Any]:
        assignment_id = work.provider_data.get("assignment_id")
        if not assignment_id:
            raise WorkNotSubmitted(f"cannot {doing} worker {work.worker_name}: no MTurk assignment is recorded")
        try:
            return dict(self.call("GetAssignment", AssignmentId=str(assignment_id))["Assignment"])
        except ProviderCallFailed as failed:
            if failed.turk_code == "AWS.MechanicalTurk.AssignmentDoesNotExist":
                raise WorkNotSubmitted(f"cannot {doing} worker {work.worker_name}: MTurk assignment {assignment_id} "
                                       "is not submitted yet") from None
            raise

    def approve_work(self, work: SubmittedWork, *, idempotency_key: str) -> str:
        assignment = self._assignment(work, "approve")
        status = assignment["AssignmentStatus"]
        if status != "Approved":
            self.call("ApproveAssignment", AssignmentId=assignment["AssignmentId"],
                      **({"OverrideRejection": True} if status == "Rejected" else {}))
        return f"mturk:approved:{assignment['AssignmentId']}"

    def reject_work(self, work: SubmittedWork, reason: str, *, idempotency_key: str) -> str:
        assignment = self._assignment(work, "reject")
        if assignment["AssignmentStatus"] != "Rejected":
            self.call("RejectAssignment", AssignmentId=assignment["AssignmentId"], RequesterFeedback=reason)
        return f"mturk:rejected:{assignment['AssignmentId']}"

    def pay_bonus(self, work: SubmittedWork, amount: float, reason: str, *, idempotency_key: str) -> str:
        assignment = self._assignment(work, "pay a bonus to")
        if assignment["AssignmentStatus"] not in ("Submitted", "Approved"):
            raise WorkNotSubmitted(f"cannot pay a bonus on MTurk assignment {assignment['AssignmentId']}: it is "
                                   f"{assignment['AssignmentStatus']}")
        try:
            self.call("SendBonus", WorkerId=work.worker_name, AssignmentId=assignment["AssignmentId"],
                      BonusAmount=mapping.amount(amount), Reason=reason,
                      UniqueRequestToken=mapping.request_token(idempotency_key))
        except ProviderCallFailed as failed:
            if failed.turk_code != "AWS.MechanicalTurk.DuplicateRequest":
                raise
        return f"mturk:bonus:{assignment['AssignmentId']}:{mapping.amount(amount)}"

    def block_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        self.call("CreateWorkerBlock", WorkerId=worker_name, Reason=reason or "blocked by the requester")
        return f"mturk:blocked:{worker_name}"

    def unblock_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        self.call("DeleteWorkerBlock", WorkerId=worker_name, Reason=reason or "unblocked by the requester")
        return f"mturk:unblocked:{worker_name}"

    # -- qualifications and messages ------------------------------------------------------------------

    def grant_qualification(self, worker_name: str, qualification_name: str, value: int) -> str:
        type_id = self.qualification_type_id(qualification_name)
        self.call("AssociateQualificationWithWorker", QualificationTypeId=type_id, WorkerId=worker_name,
                  IntegerValue=value, SendNotification=False)
        return f"mturk:granted:{type_id}:{worker_name}:{value}"

    def revoke_qualification(self, worker_name: str, qualification_name: str, reason: str) -> str:
        type_id = self.qualification_type_id(qualification_name)
        try:
            self.call("DisassociateQualificationFromWorker", QualificationTypeId=type_id, WorkerId=worker_name,
                      Reason=reason or "revoked by the requester")
        except ProviderCallFailed as failed:
            if failed.turk_code != "AWS.MechanicalTurk.QualificationDoesNotExist":
                raise
        return f"mturk:revoked:{type_id}:{worker_name}"

    def notify_workers(self, worker_names: Sequence[str], subject: str, message: str) -> list[str]:
        """Message workers (100 at a time, MTurk's limit); returns the workers MTurk could not reach."""
        failed: list[str] = []
        names = list(worker_names)
        for start in range(0, len(names), 100):
            answer = self.call("NotifyWorkers", Subject=subject, MessageText=message, WorkerIds=names[start:start + 100])
            failed += [f["WorkerId"] for f in answer.get("NotifyWorkersFailureStatuses", [])]
        return failed


def _raise(error: Exception) -> str:
    raise error


class MTurkSandboxProvider(MTurkProvider):
    """MTurk's sandbox: the same API at another endpoint, test workers, no real payments."""

    provider_type = "mturk_sandbox"
    is_sandbox = True
