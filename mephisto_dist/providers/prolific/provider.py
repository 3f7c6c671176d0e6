"""Prolific through its researcher API behind the CrowdProvider contract. A run is one study in a
workspace and project found (or made) by name, marked with the run in its ``internal_name``: the first
launch makes and publishes it with one place, each further launch adds a place (places only grow).
A participant comes with Prolific's ids, submits at our server and is sent back to Prolific with the
study's completion code, which puts the submission up for review; approval, rejection and bonuses are
Prolific's submission transitions and bulk bonus payments."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mephisto_dist.errors import MephistoDistError
from mephisto_dist.providers import ListedStudy, StudySubmission, SubmittedWork, UnitLaunch
from mephisto_dist.providers.prolific import places, study
from mephisto_dist.providers.prolific.client import (
    API_PATH,
    ClientFactory,
    ProlificAccess,
    ProlificApi,
    ProlificCallFailed,
)
from mephisto_dist.providers.prolific.client import build_client as default_client
from mephisto_dist.providers.prolific.places import PlacesLock

ACTIVE, AWAITING_REVIEW, APPROVED, REJECTED, PROCESSING = "ACTIVE", "AWAITING REVIEW", "APPROVED", "REJECTED", \
    "PROCESSING"
PROCESSING_WAIT_S = 10.0  # how long a call waits out Prolific's transient PROCESSING before failing (retried)
DEFAULT_WORKSPACE, DEFAULT_PROJECT = "My Workspace", "Project"
DEFAULT_ALLOW_LIST, DEFAULT_BLOCK_LIST = "Allow list", "Block list"
GROUP_ADD_BATCH = 500  # participants added to a group per call


class WorkNotSubmitted(MephistoDistError):
    """A payment asked for before Prolific holds the participant's completed submission."""


@dataclass(frozen=True)
class StudyRef:
    study_id: str
    code: str


# Per process: a run's study and the launches that already added their place, so that a re-sent launch
# adds none (a sender that died mid-call may have added one: at most one spare place, which a participant
# who finds no unit returns).
_STUDIES: dict[tuple[str, str, str, int], StudyRef] = {}
_PLACED: set[tuple[str, str]] = set()
_LOCK = threading.Lock()


class ProlificProvider:
    """Prolific studies: real participants, real payments."""

    provider_type = "prolific"
    is_marketplace = True
    is_sandbox = False
    fee_rate = 1 / 3  # Prolific's service fee on rewards and bonuses (VAT aside)
    is_hit_based = False
    is_study_based = True  # a run is one study; beat reconciles it (RunsStudies)
    syncs_qualifications = False
    publishes_instantly = False
    overrides_rejections = False  # Prolific cannot turn a rejected submission into an approved one

    def __init__(self, provider_args: Mapping[str, Any] | None = None, *,
                 client_factory: ClientFactory = default_client, sleep: Callable[[float], None] = time.sleep,
                 places_lock: PlacesLock | None = None) -> None:
        self._args = dict(provider_args or {})
        self.access = ProlificAccess.from_args(self._args)
        self.api = ProlificApi(self.access, client_factory)
        self._sleep = sleep
        self._places_lock = places_lock  # None: the deployment's Redis (places.default_lock), on first use

    @classmethod
    def from_args(cls, provider_args: Mapping[str, Any]) -> ProlificProvider:
        provider = cls(provider_args)
        study.eligibility_requirements(provider_args.get("prolific_eligibility_requirements"))  # checked early
        return provider

    @property
    def deployment(self) -> str:
        return str(self._args.get("deployment") or "default")

    def _arg(self, name: str, default: str) -> str:
        return str(self._args.get(name) or default)

    # -- account, workspace, project ----------------------------------------------------------------------

    def account_check(self) -> str:
        """Who the token belongs to (the requester check of ``requesters``)."""
        me = self.api.call("GET", "users/me/")
        return f"account {me.get('email') or me.get('id')}"

    def workspace_id(self) -> str:
        title = self._arg("prolific_workspace_name", DEFAULT_WORKSPACE)
        for found in self._pages("workspaces/"):
            if found.get("title") == title:
                return str(found["id"])
        return str(self.api.call("POST", "workspaces/", {"title": title})["id"])

    def project_id(self) -> str:
        workspace = self.workspace_id()
        title = self._arg("prolific_project_name", DEFAULT_PROJECT)
        for found in self._pages(f"workspaces/{workspace}/projects/"):
            if found.get("title") == title:
                return str(found["id"])
        return str(self.api.call("POST", f"workspaces/{workspace}/projects/", {"title": title})["id"])

    # -- publishing ---------------------------------------------------------------------------------------

    def publish_unit(self, launch: UnitLaunch, server_url: str, task_args: Mapping[str, Any]) -> str:
        """The run's study, made with this launch's place, or one more place for it."""
        key = (self.access.endpoint, self.access.requester_name, self.deployment, launch.run_id)
        placed = (self.access.endpoint, launch.launch_id)
        with _LOCK:
            ref = _STUDIES.get(key)
            already = placed in _PLACED
        if ref is None:
            ref, made_with_place = self._find_or_make_study(launch.run_id, server_url, task_args)
            with _LOCK:
                _STUDIES[key] = ref
                if made_with_place:
                    _PLACED.add(placed)
                    already = True
        if not already:
            self._add_place(ref.study_id)
            with _LOCK:
                _PLACED.add(placed)
        return f"{ref.study_id}:{launch.launch_id}"

    def _ours(self, project_id: str, run_id: int) -> list[dict[str, Any]]:
        wanted = study.mark(self.deployment, run_id)
        found = [s for s in self._pages(f"projects/{project_id}/studies/") if s.get("internal_name") == wanted]
        return sorted(found, key=lambda s: (str(s.get("date_created")), str(s["id"])))

    def _find_or_make_study(self, run_id: int, server_url: str,
                            task_args: Mapping[str, Any]) -> tuple[StudyRef, bool]:
        """Find the run's study, or make and publish it with one place (True: the caller's launch has it).
        Two processes making it at once both find the older one and the younger is deleted unpublished."""
        project = self.project_id()
        found = self._ours(project, run_id)
        if found:
            return StudyRef(str(found[0]["id"]), study.completion_code(found[0]) or ""), False
        code = study.new_completion_code()
        url = study.external_url(server_url, self.access.app_url, code,
                                 str(self._args.get("prolific_external_study_url") or "") or None)
        blocked = self._blocked(project)
        made = self.api.call("POST", "studies/", study.study_body(
            task_args, self._args, deployment=self.deployment, run_id=run_id, project_id=project, url=url, code=code,
            blocked=blocked, allow_group=self._allow_list(project, task_args, blocked)))
        first = self._ours(project, run_id)[0]
        if str(first["id"]) != str(made["id"]):
            self.api.call("DELETE", f"studies/{made['id']}/")
            return StudyRef(str(first["id"]), study.completion_code(first) or ""), False
        self.api.call("POST", f"studies/{made['id']}/transition/", {"action": "PUBLISH"})
        return StudyRef(str(made["id"]), code), True

    def _add_place(self, study_id: str) -> None:
        self.add_places(study_id, 1)

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        """Prolific cannot take a place back: taking units off stops their study (it is only asked when a
        run stops launching). A participant already in it may still finish."""
        for study_id in sorted({unit.split(":", 1)[0] for unit in provider_unit_ids if unit}):
            self.stop_study(study_id)

    def unpublish_launches(self, launches: Sequence[UnitLaunch]) -> None:
        """A launch whose sender died may have added a place; places cannot be taken back, and the study
        is stopped with the run's other units."""
        return

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        return None

    # -- what beat's study reconciler asks (RunsStudies) ----------------------------------------------------

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a listing, following Prolific's ``_links.next`` when it pages."""
        next_path: str | None = path
        while next_path:
            page = self.api.call("GET", next_path) or {}
            yield from page.get("results") or []
            href = ((page.get("_links") or {}).get("next") or {}).get("href")
            next_path = href.split(API_PATH, 1)[-1] if href else None

    def list_studies(self) -> list[ListedStudy]:
        listed = []
        for found in self._pages("studies/"):
            mark = study.parse_mark(found.get("internal_name"))
            listed.append(ListedStudy(
                str(found["id"]), str(found.get("name") or ""), str(found.get("status") or ""),
                int(found.get("total_available_places") or 0), int(found.get("places_taken") or 0),
                mark[0] if mark else None, mark[1] if mark else None, study.parse_time(found.get("date_created"))))
        return listed

    def study_submissions(self, study_id: str) -> list[StudySubmission]:
        return [StudySubmission(str(s["id"]), str(s.get("participant_id") or s.get("participant") or ""),
                                str(s.get("status") or ""), study.parse_time(s.get("started_at")),
                                study.parse_time(s.get("completed_at")))
                for s in self._pages(f"submissions/?study={study_id}")]

    def add_places(self, study_id: str, count: int) -> None:
        """Raise the study's places by ``count``: read and written under the study's places lock, so that
        increases from several processes at once are all kept (what it guarantees: ``places``)."""
        if count <= 0:
            return
        lock = self._places_lock or places.default_lock()
        with lock.held(self.access.endpoint, study_id):
            current = self.api.call("GET", f"studies/{study_id}/")
            self.api.call("PATCH", f"studies/{study_id}/",
                          {"total_available_places": int(current["total_available_places"]) + count})

    def stop_study(self, study_id: str) -> None:
        status = self._settled(self._reader(f"studies/{study_id}/"))["status"]
        if status in (ACTIVE, "PAUSED"):
            self.api.call("POST", f"studies/{study_id}/transition/", {"action": "STOP"})

    # -- review and pay -----------------------------------------------------------------------------------

    def _settled(self, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Read again while Prolific shows its transient PROCESSING (bounded: then the call fails and the
        ledger retries it)."""
        deadline = time.monotonic() + PROCESSING_WAIT_S
        while True:
            found = read()
            if found.get("status") != PROCESSING or time.monotonic() > deadline:
                return found
            self._sleep(0.2)

    def _reader(self, path: str) -> Callable[[], dict[str, Any]]:
        return lambda: dict(self.api.call("GET", path))

    def _submission(self, work: SubmittedWork, doing: str) -> dict[str, Any]:
        submission_id = work.provider_data.get("assignment_id") or work.provider_data.get("submission_id")
        if not submission_id:
            raise WorkNotSubmitted(f"cannot {doing} participant {work.worker_name}: no Prolific submission is "
                                   "recorded")
        found = self._settled(self._reader(f"submissions/{submission_id}/"))
        if found["status"] == ACTIVE:
            raise WorkNotSubmitted(f"cannot {doing} participant {work.worker_name}: Prolific submission "
                                   f"{submission_id} is not completed yet (the participant has not come back "
                                   "with the completion code)")
        if found["status"] == PROCESSING:
            raise ProlificCallFailed("GET", f"submissions/{submission_id}/", 409, "still PROCESSING")
        return dict(found)

    def approve_work(self, work: SubmittedWork, *, idempotency_key: str) -> str:
        found = self._submission(work, "approve")
        if found["status"] == AWAITING_REVIEW:
            self.api.call("POST", f"submissions/{found['id']}/transition/", {"action": "APPROVE"})
        elif found["status"] != APPROVED:
            raise ProlificCallFailed("POST", f"submissions/{found['id']}/transition/", 400,
                                     f"a submission that is {found['status']} cannot be approved on Prolific")
        return f"prolific:approved:{found['id']}"

    def reject_work(self, work: SubmittedWork, reason: str, *, idempotency_key: str) -> str:
        found = self._submission(work, "reject")
        if found["status"] == AWAITING_REVIEW:
            self.api.call("POST", f"submissions/{found['id']}/transition/", {
                "action": "REJECT", "message": study.rejection_message(reason), "rejection_category": "OTHER"})
        elif found["status"] != REJECTED:
            raise ProlificCallFailed("POST", f"submissions/{found['id']}/transition/", 400,
                                     f"a submission that is {found['status']} cannot be rejected on Prolific")
        return f"prolific:rejected:{found['id']}"

    def pay_bonus(self, work: SubmittedWork, amount: float, reason: str, *, idempotency_key: str) -> str:
        """Set up, then pay, a bonus on the submission's study. Prolific's pay call is not idempotent: the
        ledger makes it once, and a re-send after a crash between Prolific paying and our record finds the
        payment on the submission (a bonus of the same amount) and pays nothing more."""
        found = self._submission(work, "pay a bonus to")
        if found["status"] not in (AWAITING_REVIEW, APPROVED):
            raise WorkNotSubmitted(f"cannot pay a bonus on Prolific submission {found['id']}: it is {found['status']}")
        cents = round(amount * 100)
        receipt = f"prolific:bonus:{found['id']}:{amount:.2f}"
        if cents in [int(paid) for paid in found.get("bonus_payments") or []]:
            return receipt
        bulk = self.api.call("POST", "submissions/bonus-payments/", {
            "study_id": found["study_id"], "csv_bonuses": f"{work.worker_name},{amount:.2f}"})
        self.api.call("POST", f"bulk-bonus-payments/{bulk['id']}/pay/")
        return f"{receipt}:{bulk['id']}"

    def _group(self, project: str, name: str, *, create: bool) -> str | None:
        """The id of the project's participant group of this name: found (the first listed), else
        made when ``create``, else None."""
        for found in self._pages(f"participant-groups/?project_id={project}"):
            if found.get("name") == name:
                return str(found["id"])
        if not create:
            return None
        return str(self.api.call("POST", "participant-groups/", {"project_id": project, "name": name})["id"])

    def _block_list(self) -> str:
        name = self._arg("prolific_block_list_group_name", DEFAULT_BLOCK_LIST)
        return str(self._group(self.project_id(), name, create=True))

    def _blocked(self, project: str) -> list[str]:
        """The participants in the block-list group (looked up, never made here): a new study keeps them out
        with its custom block list, as Mephisto's does with the workers it has blocked."""
        group = self._group(project, self._arg("prolific_block_list_group_name", DEFAULT_BLOCK_LIST), create=False)
        if group is None:
            return []
        return sorted(str(m["participant_id"]) for m in self._pages(f"participant-groups/{group}/participants/"))

    def _allow_list(self, project: str, task_args: Mapping[str, Any], blocked: Sequence[str]) -> str | None:
        """The allow-list group a new study requires, as Mephisto makes one for a run with qualifications:
        the participants known to meet the run's qualification requirements (``allowed_workers``, worked
        out by the launcher from our grants), less the blocked, are added to the project's participant
        group ``prolific_allow_list_group_name`` (found, or made), and the study takes only its members
        (a ``ParticipantGroupEligibilityRequirement``; prolific-local checks the group's members when a
        participant comes, as Mephisto's "dynamically updated" group takes Prolific to). No requirement
        when the run has none, or nobody known meets them (Mephisto's choice: the study stays open, and our
        server refuses an unqualified participant when the task opens, as on any provider). The group is
        shared by the project's runs: it narrows who sees a study; our server's check stays the gate."""
        allowed = sorted({str(p) for p in task_args.get("allowed_workers") or []} - set(blocked))
        if not task_args.get("qualifications") or not allowed:
            return None
        group = str(self._group(project, self._arg("prolific_allow_list_group_name", DEFAULT_ALLOW_LIST), create=True))
        for start in range(0, len(allowed), GROUP_ADD_BATCH):
            self.api.call("POST", f"participant-groups/{group}/participants/",
                          {"participant_ids": allowed[start:start + GROUP_ADD_BATCH]})
        return group

    def block_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        group = self._block_list()
        self.api.call("POST", f"participant-groups/{group}/participants/", {"participant_ids": [worker_name]})
        return f"prolific:blocked:{worker_name}:{group}"

    def unblock_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        group = self._block_list()
        self.api.call("DELETE", f"participant-groups/{group}/participants/", {"participant_ids": [worker_name]})
        return f"prolific:unblocked:{worker_name}:{group}"
