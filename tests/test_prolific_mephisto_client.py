"""Mephisto's own Prolific client against a real ``mephisto-dist prolific-local`` process.

The client is Mephisto's ``mephisto/abstractions/providers/prolific``: ``prolific_utils`` and its ``api``
package (facebookresearch/Mephisto, MIT licence). Its code is not copied into this repository (the
reference copy it was read from may be consulted, not committed): ``MephistoApi`` below makes, call for
call, the HTTP requests its resources make, the way ``BaseAPIResource._base_request`` makes them
(``requests``, the endpoint joined onto ``PROLIFIC_BASE_URL``, ``Authorization: Token KEY``, the parameters
as a JSON body whatever the method, ``raise_for_status``, an empty 204 read as None); the functions after
it follow ``prolific_utils`` step by step and read from each answer what Mephisto reads. Each names the
Mephisto function it stands for.

Where prolific-local answered otherwise than Prolific, prolific-local was changed (the cost calculator,
eligibility requirements listed, counted and applied, a study completed once all is reviewed, messages
tied to a study and listed by user or date, unread messages, a workspace renamed, a bulk bonus paid again
when asked). Where Mephisto's client itself asks what Prolific refuses, the refusal is asserted and said:
``Submissions.reject`` sends ``rejection_category`` as a one-item list (a stray comma makes a tuple), and
``Messages.list_unread`` asks ``messages/`` with neither ``user_id`` nor ``created_after``. The
``Invitations`` resource is used by Mephisto's ``scripts/initialize_project.py`` only. Last, the study
our own provider makes carries its eligibility requirements as Mephisto's client makes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx
import pytest
import requests

from mephisto_dist.providers import UnitLaunch
from mephisto_dist.providers.prolific import ProlificProvider
from mephisto_dist.providers.prolific import study as our_study
from mephisto_dist.providers.prolific.client import ProlificAccess, ProlificApi
from tests.conftest import wait_for
from tests.prolific_local_process import come_back, prolific_local, take_part
from tests.test_prolific_eligibility import CONFIGURED, EXPECTED

pytestmark = pytest.mark.system

API_KEY = "mephisto-client-key-registered-in-prolific-local"
AGE_QUESTION_ID = "54ac6ea9fdf99b2204feb893"  # Mephisto's constants.ELIGIBILITY_REQUIREMENT_AGE_RANGE_QUESTION_ID
DEFAULT_REJECTION_MESSAGE = ("This is default automatical rejection message "  # constants.DEFAULT_REJECTION_...
                             "as Prolific requires some text at least 100 chars long.")
STUDY_REQUIRED = ("name", "description", "external_study_url", "prolific_id_option", "completion_option",
                  "completion_codes", "total_available_places", "estimated_completion_time", "reward",
                  "eligibility_requirements")  # data_models.Study.required_schema_fields, checked before sending
EXTERNAL_URL = ("https://task.example/?participant_id={{%PROLIFIC_PID%}}&study_id={{%STUDY_ID%}}"
                "&submission_id={{%SESSION_ID%}}")


class MephistoApi:
    """The requests of Mephisto's ``api`` resources, one method per resource method used."""

    def __init__(self, prolific: str, api_key: str = API_KEY) -> None:
        self.base_url = f"{prolific}/api/v1/"  # PROLIFIC_BASE_URL, which Mephisto reads when it is imported
        self.api_key = api_key

    def request(self, method: str, endpoint: str, params: dict[str, Any] | None = None) -> Any:
        """``BaseAPIResource._base_request``."""
        response = requests.request(method, urljoin(self.base_url, endpoint), json=params, timeout=10,
                                    headers={"Authorization": f"Token {self.api_key}"})
        response.raise_for_status()
        return None if response.status_code == 204 and not response.content else response.json()

    # Users, Workspaces, Projects
    def users_me(self) -> dict[str, Any]:
        return dict(self.request("GET", "users/me/"))

    def workspaces_list(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "workspaces/")["results"])

    def workspaces_create(self, **data: Any) -> dict[str, Any]:
        assert data.get("title")  # Workspace.required_schema_fields
        return dict(self.request("POST", "workspaces/", data))

    def workspaces_update(self, workspace_id: str, **data: Any) -> dict[str, Any]:
        if data.get("description") == "":
            data.pop("description")  # as Workspaces.update does
        return dict(self.request("PATCH", f"workspaces/{workspace_id}/", data))

    def workspaces_get_balance(self, workspace_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"workspaces/{workspace_id}/balance/"))

    def invitations_create(self, workspace_id: str, collaborators: list[str],
                           role: str = "WORKSPACE_ADMIN") -> dict[str, Any]:
        """``Invitations.create`` (``WorkspaceRole.WORKSPACE_ADMIN`` by default)."""
        return dict(self.request("POST", "invitations/", {"association": workspace_id, "emails": collaborators,
                                                          "role": role}))

    def projects_list_for_workspace(self, workspace_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"workspaces/{workspace_id}/projects/")["results"])

    def projects_create_for_workspace(self, workspace_id: str, **data: Any) -> dict[str, Any]:
        return dict(self.request("POST", f"workspaces/{workspace_id}/projects/", data))

    # Studies
    def studies_list(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "studies/")["results"])

    def studies_list_for_project(self, project_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"projects/{project_id}/studies/")["results"])

    def studies_retrieve(self, study_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"studies/{study_id}/"))

    def studies_create(self, **data: Any) -> dict[str, Any]:
        missing = [name for name in STUDY_REQUIRED if name not in data]
        assert not missing, missing  # Study.validate() refuses before any request
        return dict(self.request("POST", "studies/", data))

    def studies_update(self, study_id: str, **data: Any) -> dict[str, Any]:
        return dict(self.request("PATCH", f"studies/{study_id}/", data))

    def studies_publish(self, study_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"studies/{study_id}/transition/", {"action": "PUBLISH"}))

    def studies_stop(self, study_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"studies/{study_id}/transition/", {"action": "STOP"}))

    def studies_calculate_cost(self, reward: float, total_available_places: int) -> float:
        return float(self.request("POST", "study-cost-calculator/", {
            "reward": reward, "total_available_places": total_available_places})["total_cost"])

    # Submissions
    def submissions_list(self, study_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"submissions/?study={study_id}")["results"])

    def submissions_retrieve(self, submission_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"submissions/{submission_id}/"))

    def submissions_approve(self, submission_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"submissions/{submission_id}/transition/", {"action": "APPROVE"}))

    def submissions_reject(self, submission_id: str) -> dict[str, Any]:
        """``Submissions.reject``: ``params["rejection_category"] = (rejection_category,)`` in Mephisto, so
        the category goes as a one-item JSON list."""
        return dict(self.request("POST", f"submissions/{submission_id}/transition/", {
            "action": "REJECT", "message": DEFAULT_REJECTION_MESSAGE, "rejection_category": ["OTHER"]}))

    # Bonuses
    def bonuses_set_up(self, study_id: str, csv_bonuses: str) -> dict[str, Any]:
        return dict(self.request("POST", "submissions/bonus-payments/", {
            "study_id": study_id, "csv_bonuses": csv_bonuses}))

    def bonuses_pay(self, bonus_id: str) -> Any:
        return self.request("POST", f"bulk-bonus-payments/{bonus_id}/pay/")

    # Participant groups
    def groups_list(self, project_id: str) -> list[dict[str, Any]]:
        query = urlencode({"project_id": project_id, "is_active": True})
        return list(self.request("GET", f"participant-groups/?{query}")["results"])

    def groups_create(self, **data: Any) -> dict[str, Any]:
        return dict(self.request("POST", "participant-groups/", data))

    def groups_remove(self, group_id: str) -> None:
        self.request("DELETE", f"participant-groups/{group_id}/")

    def groups_list_participants(self, group_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"participant-groups/{group_id}/participants/")["results"])

    def groups_add_participants(self, group_id: str, participant_ids: list[str]) -> list[dict[str, Any]]:
        return list(self.request("POST", f"participant-groups/{group_id}/participants/",
                                 {"participant_ids": participant_ids})["results"])

    def groups_remove_participants(self, group_id: str, participant_ids: list[str]) -> list[dict[str, Any]]:
        return list(self.request("DELETE", f"participant-groups/{group_id}/participants/",
                                 {"participant_ids": participant_ids})["results"])

    # Messages, eligibility requirements
    def messages_send(self, **data: Any) -> dict[str, Any]:
        assert {"body", "recipient_id", "study_id"} <= set(data)  # Message.required_schema_fields
        return dict(self.request("POST", "messages/", data))

    def messages_list(self, user_id: str | None = None, created_after: datetime | None = None) -> list[Any]:
        endpoint = "messages/"
        if user_id:
            endpoint += f"?user_id={user_id}"
        elif created_after:
            endpoint += f"?created_after={created_after.isoformat()}"
        return list(self.request("GET", endpoint)["results"])

    def messages_list_unread(self) -> list[Any]:
        """``Messages.list_unread`` asks the list endpoint, not its own ``messages/unread/``."""
        return list(self.request("GET", "messages/")["results"])

    def eligibility_requirements_list(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "eligibility-requirements/")["results"])

    def eligibility_count_participants(self) -> int:
        return int(self.request("POST", "eligibility-count/")["count"])


# -- prolific_utils ---------------------------------------------------------------------------------------

MEPHISTO_REQUIREMENT_PARAMS = {  # eligibility_requirement_classes: each class's __init__ parameters
    "AgeRangeEligibilityRequirement": ("min_age", "max_age"),
    "ApprovalNumbersEligibilityRequirement": ("minimum_approvals", "maximum_approvals"),
    "ApprovalRateEligibilityRequirement": ("minimum_approval_rate", "maximum_approval_rate"),
    "CustomBlacklistEligibilityRequirement": ("black_list",),
    "CustomWhitelistEligibilityRequirement": ("white_list",),
    "JoinedBeforeEligibilityRequirement": ("joined_before",),
    "ParticipantGroupEligibilityRequirement": ("id",),
}


def convert_eligibility_requirements(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``prolific_utils._convert_eligibility_requirements`` with the classes' ``to_prolific_dict``: an
    unknown name is skipped; an attribute whose value is empty is left out; the age range adds Prolific's
    age question; a participant group is ``[{"id": ..., "value": True}]``."""
    found = []
    for conf in value:
        name = conf.get("name")
        if name not in MEPHISTO_REQUIREMENT_PARAMS:
            continue
        cls = f"web.eligibility.models.{name}"
        if name == "ParticipantGroupEligibilityRequirement":
            found.append({"_cls": cls, "attributes": [{"id": conf["id"], "value": True}]})
            continue
        made: dict[str, Any] = {"_cls": cls, "attributes": [
            {"name": p, "value": conf[p]} for p in MEPHISTO_REQUIREMENT_PARAMS[name] if conf.get(p)]}
        if name == "AgeRangeEligibilityRequirement":
            made["query"] = {"id": AGE_QUESTION_ID}
        found.append(made)
    return found


def check_credentials(api: MephistoApi) -> bool:
    try:
        api.users_me()
        return True
    except requests.HTTPError:
        return False


def find_or_create_prolific_workspace(api: MephistoApi, title: str) -> dict[str, Any]:
    for workspace in api.workspaces_list():
        if workspace["title"] == title:
            return workspace
    return api.workspaces_create(title=title)


def find_or_create_prolific_project(api: MephistoApi, workspace_id: str, title: str) -> dict[str, Any]:
    for project in api.projects_list_for_workspace(workspace_id):
        if project["title"] == title:
            return project
    return api.projects_create_for_workspace(workspace_id, title=title)


def check_balance(api: MephistoApi, workspace_name: str) -> float | None:
    found = [w for w in api.workspaces_list() if w["title"] == workspace_name]
    return float(api.workspaces_get_balance(found[0]["id"])["available_balance"]) if found else None


def find_qualification(api: MephistoApi, project_id: str, name: str) -> dict[str, Any] | None:
    return next((g for g in api.groups_list(project_id) if g["name"] == name), None)


def find_or_create_qualification(api: MephistoApi, project_id: str, name: str) -> dict[str, Any]:
    return find_qualification(api, project_id, name) or api.groups_create(project_id=project_id, name=name)


def completion_codes(suffix: str) -> list[dict[str, Any]]:
    """``create_study.compose_completion_codes``."""
    return [{"code": f"COMPLETED_{suffix}", "code_type": "COMPLETED", "actions": [{"action": "MANUALLY_REVIEW"}]}]


def create_study(api: MephistoApi, project_id: str, requirements: list[dict[str, Any]], *, title: str,
                 reward_cents: int = 25) -> dict[str, Any]:
    """``prolific_utils.create_study``: made with one place and a random code, then given the code built
    from its id (where Mephisto's page sends the participant back)."""
    made = api.studies_create(
        project=project_id, name=title, internal_name=title, description="Rate sentences",
        external_study_url=EXTERNAL_URL, prolific_id_option="url_parameters", completion_option="code",
        completion_codes=completion_codes(uuid.uuid4().hex[:5]), total_available_places=1,
        estimated_completion_time=5, reward=reward_cents,
        eligibility_requirements=convert_eligibility_requirements(requirements),
        submissions_config={"max_submissions_per_participant": -1})
    return api.studies_update(made["id"], completion_codes=completion_codes(made["id"]))


def increase_total_available_places_for_study(api: MephistoApi, study_id: str) -> None:
    found = api.studies_retrieve(study_id)
    api.studies_update(found["id"], total_available_places=found["total_available_places"] + 1)


def expire_study(api: MephistoApi, study_id: str) -> dict[str, Any]:
    found = api.studies_retrieve(study_id)
    api.studies_update(study_id, internal_name=f"{found['internal_name']}_EXPIRED")
    return api.studies_stop(study_id)


def is_study_expired(found: dict[str, Any]) -> bool:
    return found["status"] in ("COMPLETED", "AWAITING REVIEW") and str(found["internal_name"]).endswith("EXPIRED")


def find_submission(api: MephistoApi, study_id: str, worker_id: str) -> dict[str, Any] | None:
    """``prolific_utils._find_submission``."""
    return next((s for s in api.submissions_list(study_id) if s["participant_id"] == worker_id), None)


def approve_work(api: MephistoApi, study_id: str, worker_id: str) -> dict[str, Any] | None:
    found = find_submission(api, study_id, worker_id)
    return api.submissions_approve(found["id"]) if found and found["status"] == "AWAITING REVIEW" else None


def reject_work(api: MephistoApi, study_id: str, worker_id: str) -> dict[str, Any] | None:
    found = find_submission(api, study_id, worker_id)
    return api.submissions_reject(found["id"]) if found and found["status"] == "AWAITING REVIEW" else None


def pay_bonus(api: MephistoApi, workspace_name: str, worker_id: str, bonus_cents: int, study_id: str) -> bool:
    """``prolific_utils.pay_bonus``: the balance checked, the amount in pounds or dollars (not cents)."""
    if not check_balance(api, workspace_name):
        return False
    bonus = api.bonuses_set_up(study_id, f"{worker_id},{bonus_cents / 100}")
    api.bonuses_pay(bonus["id"])
    return True


def block_list(api: MephistoApi, workspace: str, project: str, group: str = "Block list") -> dict[str, Any]:
    """``prolific_utils._get_block_list_qualification``."""
    workspace_id = find_or_create_prolific_workspace(api, workspace)["id"]
    project_id = find_or_create_prolific_project(api, workspace_id, project)["id"]
    return find_or_create_qualification(api, project_id, group)


def is_worker_blocked(api: MephistoApi, workspace: str, project: str, worker_id: str) -> bool:
    workspace_id = find_or_create_prolific_workspace(api, workspace)["id"]
    project_id = find_or_create_prolific_project(api, workspace_id, project)["id"]
    group = find_qualification(api, project_id, "Block list")
    return group is not None and worker_id in [p["participant_id"] for p in api.groups_list_participants(group["id"])]


# -- the tests --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prolific(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("prolific-mephisto-client")
    with prolific_local(directory / "prolific.sqlite3", directory / "prolific.log", processing_s=0.2,
                        api_key=API_KEY) as url:
        yield url


@pytest.fixture()
def api(prolific: str) -> MephistoApi:
    return MephistoApi(prolific)


def settled(api: MephistoApi, read: str, object_id: str) -> dict[str, Any]:
    """The study or submission once Prolific's transient PROCESSING has passed."""
    getter = api.studies_retrieve if read == "study" else api.submissions_retrieve

    def found() -> dict[str, Any] | None:
        answer = getter(object_id)
        return answer if answer["status"] != "PROCESSING" else None

    result: dict[str, Any] = wait_for(found, timeout_s=5, interval_s=0.05,
                                      message=f"{read} {object_id} to leave PROCESSING")
    return result


def published(api: MephistoApi, workspace: str, requirements: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    workspace_id = find_or_create_prolific_workspace(api, workspace)["id"]
    project_id = find_or_create_prolific_project(api, workspace_id, "Project")["id"]
    made = create_study(api, project_id, requirements or [], title=f"Study in {workspace}")
    api.studies_publish(made["id"])
    return settled(api, "study", made["id"])


def take_part_and_finish(prolific: str, study: dict[str, Any], who: str) -> str:
    submission_id = str(take_part(prolific, study["id"], who)["submission_id"])
    code = study["completion_codes"][0]["code"]
    assert come_back(f"{prolific}/submissions/complete?cc={code}", who)["status"] == "AWAITING REVIEW"
    return submission_id


def refusal(call: Any) -> tuple[int, Any]:
    with pytest.raises(requests.HTTPError) as refused:
        call()
    response = refused.value.response
    assert response is not None
    return response.status_code, response.json()["error"]["detail"]


def test_credentials_workspace_and_project_found_or_made(api: MephistoApi, prolific: str) -> None:
    assert check_credentials(api)
    assert not check_credentials(MephistoApi(prolific, api_key="not-the-registered-key"))
    workspace = find_or_create_prolific_workspace(api, "Lab")
    assert find_or_create_prolific_workspace(api, "Lab")["id"] == workspace["id"]
    assert [w["title"] for w in api.workspaces_list()].count("Lab") == 1
    project = find_or_create_prolific_project(api, workspace["id"], "Ratings")
    assert find_or_create_prolific_project(api, workspace["id"], "Ratings")["id"] == project["id"]
    assert (check_balance(api, "Lab") or 0) > 0 and check_balance(api, "No such workspace") is None
    renamed = api.workspaces_update(workspace["id"], title="Lab (renamed)", description="")
    assert renamed["title"] == "Lab (renamed)" and renamed["id"] == workspace["id"]


def test_collaborators_invited_to_a_workspace(api: MephistoApi) -> None:
    """``scripts/initialize_project.py``: the research group's workspace found or made, then its
    collaborators invited to it by email (``Invitations.create``); the script prints the answer."""
    workspace = find_or_create_prolific_workspace(api, "Research group")
    answer = api.invitations_create(workspace_id=workspace["id"], collaborators=["ann@lab.example", "bo@lab.example"])
    assert [(i["invitee"]["email"], i["role"], i["association"], i["status"]) for i in answer["invitations"]] == [
        ("ann@lab.example", "WORKSPACE_ADMIN", workspace["id"], "INVITED"),
        ("bo@lab.example", "WORKSPACE_ADMIN", workspace["id"], "INVITED")]
    collaborator = api.invitations_create(workspace["id"], ["cy@lab.example"], role="WORKSPACE_COLLABORATOR")
    assert collaborator["invitations"][0]["role"] == "WORKSPACE_COLLABORATOR"
    assert refusal(lambda: api.invitations_create("no-such-workspace", ["ann@lab.example"]))[0] == 400
    status, detail = refusal(lambda: api.invitations_create(workspace["id"], ["not an email"]))
    assert status == 400 and "emails" in detail
    status, detail = refusal(lambda: api.invitations_create(workspace["id"], ["ann@lab.example"], role="OWNER"))
    assert status == 400 and "role" in detail


def test_a_study_made_published_grown_reviewed_and_expired(api: MephistoApi, prolific: str) -> None:
    requirements = [{"name": "AgeRangeEligibilityRequirement", "min_age": 18, "max_age": 100},
                    {"name": "ApprovalRateEligibilityRequirement", "minimum_approval_rate": 90,
                     "maximum_approval_rate": 100},
                    {"name": "CustomBlacklistEligibilityRequirement", "black_list": ["PBLOCKED"]}]
    workspace_id = find_or_create_prolific_workspace(api, "Studies")["id"]
    project_id = find_or_create_prolific_project(api, workspace_id, "Project")["id"]
    made = create_study(api, project_id, requirements, title="Rate sentences")
    assert made["status"] == "UNPUBLISHED" and made["total_available_places"] == 1
    assert made["completion_codes"] == completion_codes(made["id"])
    assert made["eligibility_requirements"] == convert_eligibility_requirements(requirements)
    assert made["external_study_url"] == EXTERNAL_URL
    assert api.studies_calculate_cost(25, 4) == 100  # prolific-local charges no fee (Prolific adds its own)

    assert api.studies_publish(made["id"])["status"] == "PROCESSING"
    study = settled(api, "study", made["id"])
    assert study["status"] == "ACTIVE"
    assert made["id"] in [s["id"] for s in api.studies_list_for_project(project_id)]
    assert made["id"] in [s["id"] for s in api.studies_list()]
    blocked = httpx.post(f"{prolific}/local/studies/{made['id']}/start", json={"participant_id": "PBLOCKED"})
    assert blocked.status_code == 400 and "not eligible" in blocked.text  # the custom block list applies

    # The only place taken: Prolific sends the study to review by itself; a place added re-activates it.
    take_part(prolific, made["id"], "P1")
    assert api.studies_retrieve(made["id"])["status"] == "AWAITING REVIEW"
    increase_total_available_places_for_study(api, made["id"])
    grown = api.studies_retrieve(made["id"])
    assert grown["status"] == "ACTIVE" and grown["total_available_places"] == 2
    take_part(prolific, made["id"], "P2")
    for who in ("P1", "P2"):
        assert come_back(f"{prolific}/submissions/complete?cc=COMPLETED_{made['id']}", who)["status"] \
            == "AWAITING REVIEW"

    first = find_submission(api, made["id"], "P1")
    assert first is not None and first["status"] == "AWAITING REVIEW"
    held = api.submissions_retrieve(first["id"])
    assert held["participant"] == "P1" and held["study_id"] == made["id"]
    approved = approve_work(api, made["id"], "P1")
    assert approved is not None and approved["status"] == "PROCESSING"
    assert settled(api, "submission", first["id"])["status"] == "APPROVED"

    # Mephisto's reject sends the category as a list: refused as by Prolific's validation, nothing changed.
    status, detail = refusal(lambda: reject_work(api, made["id"], "P2"))
    assert status == 400 and "rejection_category" in detail
    second = find_submission(api, made["id"], "P2")
    assert second is not None and second["status"] == "AWAITING REVIEW"
    rejected = api.request("POST", f"submissions/{second['id']}/transition/", {
        "action": "REJECT", "message": DEFAULT_REJECTION_MESSAGE, "rejection_category": "OTHER"})
    assert rejected["status"] == "PROCESSING"
    assert settled(api, "submission", second["id"])["status"] == "REJECTED"

    # Full and all reviewed: COMPLETED, and still not finished (a place re-activates it).
    assert api.studies_retrieve(made["id"])["status"] == "COMPLETED"
    increase_total_available_places_for_study(api, made["id"])
    assert api.studies_retrieve(made["id"])["status"] == "ACTIVE"
    expired = expire_study(api, made["id"])
    assert is_study_expired(expired) and expired["internal_name"] == "Rate sentences_EXPIRED"
    assert httpx.post(f"{prolific}/local/studies/{made['id']}/start", json={"participant_id": "P3"}).status_code \
        == 400


def test_a_bonus_set_up_and_paid_as_mephisto_pays_it(api: MephistoApi, prolific: str) -> None:
    study = published(api, "Bonuses")
    submission_id = take_part_and_finish(prolific, study, "PB1")
    workspace = find_or_create_prolific_workspace(api, "Bonuses")["id"]
    before = api.workspaces_get_balance(workspace)["available_balance"]
    assert pay_bonus(api, "Bonuses", "PB1", 150, study["id"])  # "PB1,1.5": pounds, not cents
    assert api.submissions_retrieve(submission_id)["bonus_payments"] == [150]
    assert api.workspaces_get_balance(workspace)["available_balance"] == before - 150
    assert not pay_bonus(api, "No such workspace", "PB1", 150, study["id"])
    status, detail = refusal(lambda: api.bonuses_set_up(study["id"], "PSTRANGER,1.00"))
    assert status == 400 and "PSTRANGER" in str(detail)


def test_blocks_and_qualifications_are_participant_groups(api: MephistoApi, prolific: str) -> None:
    group = block_list(api, "Groups", "Project")
    assert block_list(api, "Groups", "Project")["id"] == group["id"]  # found again by name
    api.groups_add_participants(group["id"], ["PX"])  # block_worker
    assert is_worker_blocked(api, "Groups", "Project", "PX")
    assert [p["participant_id"] for p in api.groups_remove_participants(group["id"], ["PX"])] == []  # unblock
    assert not is_worker_blocked(api, "Groups", "Project", "PX")

    # A qualification: a fresh group of the qualified participants, required by the study.
    project_id = find_or_create_prolific_project(
        api, find_or_create_prolific_workspace(api, "Groups")["id"], "Project")["id"]
    qualified = api.groups_create(project_id=project_id, name="PG qualified")
    assert [p["participant_id"] for p in api.groups_add_participants(qualified["id"], ["PQ"])] == ["PQ"]
    study = published(api, "Groups", [{"name": "ParticipantGroupEligibilityRequirement", "id": qualified["id"]}])
    assert study["eligibility_requirements"] == [{"_cls": "web.eligibility.models.ParticipantGroupEligibilityRequirement",
                                                  "attributes": [{"id": qualified["id"], "value": True}]}]
    outsider = httpx.post(f"{prolific}/local/studies/{study['id']}/start", json={"participant_id": "POTHER"})
    assert outsider.status_code == 400 and "not eligible" in outsider.text
    take_part(prolific, study["id"], "PQ")
    api.groups_remove(qualified["id"])  # delete_qualification
    assert find_qualification(api, project_id, "PG qualified") is None


def test_messages_about_a_study(api: MephistoApi, prolific: str) -> None:
    study = published(api, "Messages")
    take_part_and_finish(prolific, study, "PM1")
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)  # naive: Mephisto puts it in the URL
    sent = api.messages_send(recipient_id="PM1", body="Thank you!", study_id=study["id"])
    assert sent["recipient_id"] == "PM1" and sent["body"] == "Thank you!" and sent["sender_id"]
    assert [m["body"] for m in api.messages_list(user_id="PM1")] == ["Thank you!"]
    assert "Thank you!" in [m["body"] for m in api.messages_list(created_after=before)]
    status, detail = refusal(lambda: api.request("POST", "messages/", {"recipient_id": "PM1", "body": "hi"}))
    assert status == 400 and "study_id" in detail  # Prolific requires the study a message is about
    # Mephisto's list_unread asks messages/ with neither user_id nor created_after, which Prolific refuses.
    status, detail = refusal(api.messages_list_unread)
    assert status == 400 and "user_id" in detail
    assert api.request("GET", "messages/unread/")["results"] == []


def test_eligibility_requirements_listed_and_counted(api: MephistoApi) -> None:
    listed = {r["_cls"] for r in api.eligibility_requirements_list()}
    assert {f"web.eligibility.models.{name}" for name in MEPHISTO_REQUIREMENT_PARAMS} <= listed
    assert api.eligibility_count_participants() >= 0
    everyone = api.eligibility_count_participants()
    kept_out = api.request("POST", "eligibility-count/", {"eligibility_requirements": [
        {"_cls": "web.eligibility.models.CustomWhitelistEligibilityRequirement",
         "attributes": [{"name": "white_list", "value": []}]}]})["count"]
    assert kept_out == 0 and everyone >= kept_out
    status, detail = refusal(lambda: api.request("POST", "eligibility-count/", {
        "eligibility_requirements": [{"_cls": "NoSuchRequirement"}]}))
    assert status == 400 and "eligibility_requirements" in detail


def test_our_provider_sets_eligibility_requirements_as_mephisto_does(api: MephistoApi, prolific: str) -> None:
    """``mephisto.provider.prolific_eligibility_requirements`` becomes the study's requirements exactly as
    Mephisto's classes make them, and prolific-local applies the ones about participant ids."""
    assert convert_eligibility_requirements(CONFIGURED) == EXPECTED == our_study.eligibility_requirements(CONFIGURED)
    group = [{"name": "ParticipantGroupEligibilityRequirement", "id": "G1"}]
    assert our_study.eligibility_requirements(group) == convert_eligibility_requirements(group)

    # The study our provider makes (the body it sends, through its own client) holds them on prolific-local.
    ours = ProlificApi(ProlificAccess("lab", prolific), lambda access: httpx.Client(
        base_url=f"{prolific}/api/v1/", headers={"Authorization": f"Token {API_KEY}"}))
    workspace_id = find_or_create_prolific_workspace(api, "Provider")["id"]
    project_id = find_or_create_prolific_project(api, workspace_id, "Project")["id"]
    body = our_study.study_body({"task_title": "Ours", "task_description": "Rate", "task_reward": 0.25}, {
        "prolific_eligibility_requirements": CONFIGURED}, deployment="t", run_id=1, project_id=project_id,
        url=EXTERNAL_URL, code="MDCODE")
    made = ours.call("POST", "studies/", body)
    ours.call("POST", f"studies/{made['id']}/transition/", {"action": "PUBLISH"})
    assert settled(api, "study", made["id"])["eligibility_requirements"] == EXPECTED
    for who in ("PNO", "PMAYBE"):  # on the block list; not on the allow list
        refused = httpx.post(f"{prolific}/local/studies/{made['id']}/start", json={"participant_id": who})
        assert refused.status_code == 400 and "not eligible" in refused.text
    take_part(prolific, made["id"], "PYES")


def test_our_provider_keeps_blocked_participants_out_of_a_new_study(api: MephistoApi, prolific: str) -> None:
    """A participant blocked through our provider (the block-list group) is kept out of the next study it
    makes with the study's custom block list, as Mephisto keeps the workers it blocked out."""
    provider = ProlificProvider({
        "requester_name": "lab", "endpoint_url": prolific, "deployment": "blocks",
        "prolific_workspace_name": "Provider blocks", "prolific_project_name": "Project",
        "prolific_eligibility_requirements": [{"name": "CustomWhitelistEligibilityRequirement",
                                               "white_list": ["PGOOD", "PBAD"]}]},
        client_factory=lambda access: httpx.Client(base_url=f"{prolific}/api/v1/",
                                                   headers={"Authorization": f"Token {API_KEY}"}))
    provider.block_worker("PBAD", "spam", idempotency_key="block-1")
    unit = provider.publish_unit(UnitLaunch(run_id=7, unit_id=1, launch_id="launch-1"), "http://task.example",
                                 {"task_title": "Blocked", "task_description": "Rate", "task_reward": 0.1})
    study_id = unit.split(":")[0]
    models = "web.eligibility.models."
    assert settled(api, "study", study_id)["eligibility_requirements"] == [
        {"_cls": models + "CustomWhitelistEligibilityRequirement", "attributes": [{"name": "white_list", "value": ["PGOOD"]}]},
        {"_cls": models + "CustomBlacklistEligibilityRequirement", "attributes": [{"name": "black_list", "value": ["PBAD"]}]}]
    refused = httpx.post(f"{prolific}/local/studies/{study_id}/start", json={"participant_id": "PBAD"})
    assert refused.status_code == 400 and "not eligible" in refused.text
    take_part(prolific, study_id, "PGOOD")
