"""A study's eligibility requirements, as Prolific takes them (``{"_cls": "web.eligibility.models.NAME",
"attributes": [...]}``): checked when a study is made or edited, and those about participant ids applied
when a participant takes a place (a custom block list or allow list, a participant group in or out).
Requirements about what Prolific knows of a participant (age, approvals, join date) are kept as given:
prolific-local knows nothing of its participants but their ids."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from mephisto_dist.prolific_local.faults import invalid

CLS_PREFIX = "web.eligibility.models."
BLOCK_LIST, ALLOW_LIST, GROUP = ("CustomBlacklistEligibilityRequirement", "CustomWhitelistEligibilityRequirement",
                                 "ParticipantGroupEligibilityRequirement")
KNOWN = {  # the requirement classes listed by ``eligibility-requirements/``, with their attributes
    "AgeRangeEligibilityRequirement": ("min_age", "max_age"),
    "ApprovalNumbersEligibilityRequirement": ("minimum_approvals", "maximum_approvals"),
    "ApprovalRateEligibilityRequirement": ("minimum_approval_rate", "maximum_approval_rate"),
    BLOCK_LIST: ("black_list",),
    ALLOW_LIST: ("white_list",),
    "JoinedBeforeEligibilityRequirement": ("joined_before",),
    GROUP: ("id",),
}


def check(requirements: object) -> None:
    """Refuse what Prolific's study serializer refuses: not a list of objects, each naming an eligibility
    class under ``web.eligibility.models`` with a list of attributes."""
    if not isinstance(requirements, list):
        raise invalid("eligibility_requirements", "Expected a list of items.")
    for number, item in enumerate(requirements):
        name = str(item.get("_cls") or "") if isinstance(item, Mapping) else ""
        if not name.startswith(CLS_PREFIX) or not name.endswith("EligibilityRequirement"):
            raise invalid("eligibility_requirements", f"Item {number}: {name or item!r} is not an eligibility "
                                                      "requirement class.")
        if not isinstance(item.get("attributes", []), list):
            raise invalid("eligibility_requirements", f"Item {number}: attributes must be a list.")


def _values(attributes: Iterable[Mapping[str, Any]], name: str) -> list[str]:
    found: list[str] = []
    for attribute in attributes:
        if attribute.get("name") == name and isinstance(attribute.get("value"), list):
            found += [str(v) for v in attribute["value"]]
    return found


def _member(db: sqlite3.Connection, group_id: str, participant_id: str) -> bool:
    return db.execute("SELECT 1 FROM group_member WHERE group_id = ? AND participant_id = ?",
                      (group_id, participant_id)).fetchone() is not None


def eligible(db: sqlite3.Connection, requirements: Iterable[Mapping[str, Any]], participant_id: str) -> bool:
    """Whether the requirements about participant ids let this participant in. A participant group
    requirement is ``{"id": GROUP, "value": true}`` (members only) or ``false`` (members kept out)."""
    for requirement in requirements:
        name = str(requirement.get("_cls") or "").removeprefix(CLS_PREFIX)
        attributes = [a for a in requirement.get("attributes") or [] if isinstance(a, Mapping)]
        if name == BLOCK_LIST and participant_id in _values(attributes, "black_list"):
            return False
        if name == ALLOW_LIST and participant_id not in _values(attributes, "white_list"):
            return False
        if name == GROUP:
            for attribute in attributes:
                group_id = attribute.get("id")
                if group_id and _member(db, str(group_id), participant_id) != bool(attribute.get("value", True)):
                    return False
    return True


def listing() -> dict[str, Any]:
    return {"results": [{"_cls": CLS_PREFIX + name, "attributes": [{"name": a, "value": None} for a in attributes]}
                        for name, attributes in KNOWN.items()]}


def count(db: sqlite3.Connection, data: Mapping[str, Any]) -> dict[str, Any]:
    """How many participants prolific-local knows (by a submission or a group) the requirements let in."""
    requirements = data.get("eligibility_requirements") or []
    check(requirements)
    known = {r[0] for r in db.execute("SELECT participant_id FROM submission UNION SELECT participant_id "
                                      "FROM group_member")}
    return {"count": sum(1 for participant in known if eligible(db, requirements, participant))}
