"""A run's arguments as Prolific's study (pure): its mark, its body, its external URL and completion
code, and Mephisto's eligibility requirement classes in Prolific's shape."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mephisto_dist.errors import ConfigError

# The query parameters Mephisto's Prolific pages read, filled in by Prolific from its placeholders.
URL_PARAMS = {"participant_id": "{{%PROLIFIC_PID%}}", "study_id": "{{%STUDY_ID%}}",
              "submission_id": "{{%SESSION_ID%}}"}
COMPLETED = "COMPLETED"
# Mephisto's eligibility requirement classes: the attributes each takes, the required ones first (Mephisto's
# class needs them), as many of them as are required.
REQUIREMENT_CLASSES: dict[str, tuple[tuple[str, ...], int]] = {
    "AgeRangeEligibilityRequirement": (("min_age", "max_age"), 2),
    "ApprovalNumbersEligibilityRequirement": (("minimum_approvals", "maximum_approvals"), 0),
    "ApprovalRateEligibilityRequirement": (("minimum_approval_rate", "maximum_approval_rate"), 2),
    "CustomBlacklistEligibilityRequirement": (("black_list",), 1),
    "CustomWhitelistEligibilityRequirement": (("white_list",), 1),
    "JoinedBeforeEligibilityRequirement": (("joined_before",), 1),
    "ParticipantGroupEligibilityRequirement": (("id",), 1),
}
AGE_RANGE_QUESTION_ID = "54ac6ea9fdf99b2204feb893"  # Prolific's age question, which Mephisto hard-codes too
REJECTION_NOTE = ("Your submission was reviewed by the researcher and was not accepted, for the reason "
                  "given above. Thank you for your time.")
MIN_REJECTION_MESSAGE = 100


def mark(deployment: str, run_id: int) -> str:
    """The study's ``internal_name`` (editable after publishing, unlike everything else): which run of
    which deployment it is, so a study is found again by the run, and beat can tell ours apart."""
    return f"mephisto-dist deployment={deployment} run={run_id}"


_MARK = re.compile(r"^mephisto-dist deployment=(?P<deployment>[A-Za-z0-9_-]+) run=(?P<run>\d+)$")


def parse_mark(internal_name: object) -> tuple[str, int] | None:
    """The deployment and run a study's ``internal_name`` names (:func:`mark`), or None: not ours."""
    found = _MARK.match(str(internal_name or ""))
    return None if found is None else (found["deployment"], int(found["run"]))


def parse_time(value: object) -> datetime | None:
    """Prolific's ISO 8601 time stamps (``...Z``), or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))  # 3.11+ reads a trailing Z
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def new_completion_code() -> str:
    return "MD" + secrets.token_hex(4).upper()


def external_url(server_url: str, app_url: str, code: str, given: str | None) -> str:
    """The URL Prolific sends participants to: the run's task page with Prolific's ids, and where the page
    sends the participant back with the completion code once the work is submitted. A URL given in
    ``prolific_external_study_url`` is used as it is."""
    if given:
        return given
    complete = f"{app_url.rstrip('/')}/submissions/complete?cc={code}"
    params = "&".join(f"{name}={value}" for name, value in URL_PARAMS.items())
    return f"{server_url.rstrip('/')}/?{params}&complete_url={quote(complete, safe='')}"


BLOCK_LIST, ALLOW_LIST = "CustomBlacklistEligibilityRequirement", "CustomWhitelistEligibilityRequirement"
GROUP = "ParticipantGroupEligibilityRequirement"


def keeping_out(configured: Any, blocked: Sequence[str]) -> list[Any]:
    """The configured requirements with the blocked participants kept out, as Mephisto's provider does when
    it makes a study: taken off an allow list, and added to the block list (the configured one, moved last,
    or a new one). Mephisto also takes them out of a required participant group's members (and, doing so,
    drops that requirement from the study); here the block list keeps them out of the study all the same."""
    items, block_list = list(configured or []), None
    if not blocked:
        return items
    kept = []
    for item in items:
        name = item.get("name") if isinstance(item, Mapping) else None
        if name == BLOCK_LIST:
            block_list = item
        elif name == ALLOW_LIST:
            kept.append({**item, "white_list": [p for p in _plain(item.get("white_list") or []) if p not in blocked]})
        else:
            kept.append(item)
    listed = _plain((block_list or {}).get("black_list") or [])
    return [*kept, {**(block_list or {"name": BLOCK_LIST}), "black_list": sorted({*listed, *blocked})}]


def eligibility_requirements(configured: Any) -> list[dict[str, Any]]:
    """Mephisto's ``prolific_eligibility_requirements`` (a list of ``{name, ...attributes}``) in Prolific's
    shape, as Mephisto's requirement classes make it: ``{"_cls": "web.eligibility.models.NAME",
    "attributes": [{"name", "value"}, ...]}`` with the attributes the class takes, in its order, an empty
    one (0, an empty list) left out; the age range asks Prolific's age question (``query``); a participant
    group is ``{"id": GROUP, "value": true}`` (its members only). Where Mephisto skips an unknown class
    without a word (the study would be open to everyone), or fails on a missing attribute, this is a config
    error naming what is wrong."""
    found = []
    for item in list(configured or []):
        if not isinstance(item, Mapping) or item.get("name") not in REQUIREMENT_CLASSES:
            raise ConfigError(f"mephisto.provider.prolific_eligibility_requirements: {item!r} is not one of "
                              f"{', '.join(REQUIREMENT_CLASSES)} (as {{name: CLASS, ...}})")
        name = str(item["name"])
        takes, required = REQUIREMENT_CLASSES[name]
        missing = [key for key in takes[:required] if key not in item]
        if missing:
            raise ConfigError(f"mephisto.provider.prolific_eligibility_requirements: {name} needs "
                              f"{', '.join(missing)}")
        requirement: dict[str, Any] = {"_cls": f"web.eligibility.models.{name}"}
        if name == "ParticipantGroupEligibilityRequirement":
            requirement["attributes"] = [{"id": str(item["id"]), "value": True}]
        else:
            requirement["attributes"] = [{"name": key, "value": _plain(item[key])} for key in takes if item.get(key)]
        if name == "AgeRangeEligibilityRequirement":
            requirement["query"] = {"id": AGE_RANGE_QUESTION_ID}
        found.append(requirement)
    return found


def _plain(value: Any) -> Any:
    """A list of the config (an omegaconf ``ListConfig`` too) as a JSON list."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def study_body(task_args: Mapping[str, Any], provider_args: Mapping[str, Any], *, deployment: str, run_id: int,
               project_id: str, url: str, code: str, blocked: Sequence[str] = (),
               allow_group: str | None = None) -> dict[str, Any]:
    """The study to create: one place to start with (places grow as units are launched); ``blocked``
    participants kept out (:func:`keeping_out`); only the members of ``allow_group`` let in, when given."""
    reward = float(task_args.get("task_reward") or 0)
    duration_s = int(task_args.get("assignment_duration_in_seconds") or 30 * 60)
    estimated_min = int(provider_args.get("prolific_estimated_completion_time_in_minutes") or 5)
    return {
        "project": project_id,
        "name": str(task_args.get("task_title") or "Task"),
        "internal_name": mark(deployment, run_id),
        "description": str(task_args.get("task_description") or ""),
        "external_study_url": url,
        "prolific_id_option": str(provider_args.get("prolific_id_option") or "url_parameters"),
        "completion_option": "code",
        "completion_codes": [{"code": code, "code_type": COMPLETED, "actions": [{"action": "MANUALLY_REVIEW"}]}],
        "total_available_places": 1,
        "estimated_completion_time": estimated_min,
        "maximum_allowed_time": max(estimated_min, math.ceil(duration_s / 60)),
        "reward": max(1, round(reward * 100)),  # in the account's currency's cents
        "eligibility_requirements": eligibility_requirements([
            *keeping_out(provider_args.get("prolific_eligibility_requirements"), blocked),
            *([{"name": GROUP, "id": allow_group}] if allow_group else [])]),
        "device_compatibility": ["desktop", "tablet", "mobile"],
    }


def completion_code(study: Mapping[str, Any]) -> str | None:
    for code in study.get("completion_codes") or []:
        if code.get("code_type") == COMPLETED:
            return str(code.get("code"))
    return None


def rejection_message(reason: str) -> str:
    """Prolific wants at least 100 characters: the reason, followed by a note when it is shorter."""
    reason = reason.strip() or "The work did not follow the instructions."
    return reason if len(reason) >= MIN_REJECTION_MESSAGE else f"{reason}\n\n{REJECTION_NOTE}"
