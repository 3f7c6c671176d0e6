"""Qualification types, the qualifications workers hold, worker blocks and notifications, and the
check of a HIT's QualificationRequirements against a worker.

System qualifications (Locale, Masters, approval rate, ...) are taken as met by every worker: mturk-local
has no history to compute them from."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from mephisto_dist.mturk_local import validation as v
from mephisto_dist.mturk_local.faults import RequestFault, invalid, qualification_type_missing
from mephisto_dist.mturk_local.paging import page_of, page_result, seq_result
from mephisto_dist.mturk_local.store import new_id

SYSTEM_QUALIFICATIONS = {
    "00000000000000000071",  # Locale
    "00000000000000000060",  # Adult
    "000000000000000000L0",  # PercentAssignmentsApproved
    "00000000000000000040",  # NumberHITsApproved
    "2F1QJWKUDD8XADTFD2Q0G6UTO95ALH",  # Masters (production)
    "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6",  # Masters (sandbox)
}
NO_VALUE = ("Exists", "DoesNotExist")
MANY_VALUES = ("In", "NotIn")
ACTIONS = ("Accept", "PreviewAndAccept", "DiscoverPreviewAndAccept")


def check_requirements(db: sqlite3.Connection, requirements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for requirement in requirements:
        type_id, comparator = requirement["QualificationTypeId"], requirement["Comparator"]
        if type_id not in SYSTEM_QUALIFICATIONS and _type_row(db, type_id) is None:
            raise qualification_type_missing(type_id)
        integers = requirement.get("IntegerValues") or []
        locales = requirement.get("LocaleValues") or []
        given = len(integers) + len(locales)
        if comparator in NO_VALUE and given:
            raise invalid("QualificationRequirement", comparator, "Exists and DoesNotExist take no value.")
        if comparator in MANY_VALUES and not 1 <= given <= 15:
            raise invalid("QualificationRequirement", comparator, "In and NotIn take between 1 and 15 values.")
        if comparator not in NO_VALUE + MANY_VALUES and given != 1:
            raise invalid("QualificationRequirement", comparator, f"{comparator} takes exactly one value.")
        if integers and locales:
            raise invalid("QualificationRequirement", type_id, "Give IntegerValues or LocaleValues, not both.")
        if requirement.get("ActionsGuarded", "Accept") not in ACTIONS:
            raise invalid("ActionsGuarded", requirement["ActionsGuarded"], f"It must be one of {ACTIONS}.")
    return requirements


def _compare(comparator: str, held: int | None, values: list[int]) -> bool:
    if comparator == "DoesNotExist":
        return held is None
    if held is None:
        return False
    if comparator == "Exists":
        return True
    if comparator in MANY_VALUES:
        return (held in values) == (comparator == "In")
    value = values[0]
    return {"LessThan": held < value, "LessThanOrEqualTo": held <= value, "GreaterThan": held > value,
            "GreaterThanOrEqualTo": held >= value, "EqualTo": held == value,
            "NotEqualTo": held != value}[comparator]


def worker_meets(db: sqlite3.Connection, worker_id: str, requirements_json: str, action: str) -> bool:
    """Whether the worker may do ``action`` (Discover, Preview or Accept) on a HIT with these requirements."""
    for requirement in json.loads(requirements_json):
        guarded = requirement.get("ActionsGuarded") or (
            "PreviewAndAccept" if requirement.get("RequiredToPreview") else "Accept")
        if action not in guarded:
            continue
        type_id = requirement["QualificationTypeId"]
        if type_id in SYSTEM_QUALIFICATIONS:
            continue
        row = db.execute("SELECT value FROM qualification WHERE type_id = ? AND worker_id = ? AND status = 'Granted'",
                         (type_id, worker_id)).fetchone()
        if not _compare(requirement["Comparator"], None if row is None else int(row[0]),
                        requirement.get("IntegerValues") or []):
            return False
    return True


def is_blocked(db: sqlite3.Connection, worker_id: str) -> bool:
    return db.execute("SELECT 1 FROM worker_block WHERE worker_id = ?", (worker_id,)).fetchone() is not None


# -- qualification types ---------------------------------------------------------------------------------


def _type_row(db: sqlite3.Connection, type_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM qualification_type WHERE id = ? AND deleted = 0", (type_id,)).fetchone()
    return row


def _load_type(db: sqlite3.Connection, type_id: str) -> sqlite3.Row:
    row = _type_row(db, type_id)
    if row is None:
        raise qualification_type_missing(type_id)
    return row


def _type_view(row: sqlite3.Row) -> dict[str, Any]:
    view = {"QualificationTypeId": row["id"], "CreationTime": row["created"], "Name": row["name"],
            "Description": row["description"], "Keywords": row["keywords"],
            "QualificationTypeStatus": row["status"], "RetryDelayInSeconds": row["retry_delay_s"],
            "IsRequestable": True, "AutoGranted": bool(row["auto_granted"]),
            "AutoGrantedValue": row["auto_granted_value"]}
    return {k: val for k, val in view.items() if val is not None}


def create_qualification_type(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    name = v.text("Name", p["Name"], 255, required=True)
    if "Test" in p or "AnswerKey" in p:
        raise invalid("Test", "...", "mturk-local does not run qualification tests.")
    if db.execute("SELECT 1 FROM qualification_type WHERE name = ? AND deleted = 0", (name,)).fetchone():
        raise RequestFault("AWS.MechanicalTurk.QualificationTypeAlreadyExists",
                           "You have already created a QualificationType with this name. A QualificationType's "
                           "name must be unique among all of the QualificationTypes created by the same user.")
    type_id = new_id()
    db.execute("INSERT INTO qualification_type (id, name, description, keywords, status, retry_delay_s, auto_granted,"
               " auto_granted_value, created) VALUES (?,?,?,?,?,?,?,?,?)",
               (type_id, name, v.text("Description", p["Description"], 2000, required=True),
                v.text("Keywords", p.get("Keywords"), 1000), p["QualificationTypeStatus"],
                p.get("RetryDelayInSeconds"), int(bool(p.get("AutoGranted"))),
                p.get("AutoGrantedValue", 1) if p.get("AutoGranted") else None, now))
    return {"QualificationType": _type_view(_load_type(db, type_id))}


def get_qualification_type(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    return {"QualificationType": _type_view(_load_type(db, p["QualificationTypeId"]))}


def _search_terms(query: str | None) -> tuple[str, list[str]]:
    """ListQualificationTypes' Query is a text search, not a name look-up: a type matches when every
    word of the query appears (in any case) in its name, description or keywords."""
    where, args = [], []
    for term in (query or "").split():
        like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append("(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\'"
                     " OR IFNULL(keywords, '') LIKE ? ESCAPE '\\')")
        args += [like, like, like]
    return " AND ".join(["deleted = 0", *where]), args


def list_qualification_types(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    """Every type here is the caller's own (mturk-local has one requester), and every type a requester made
    is requestable, as on MTurk, so MustBeRequestable and MustBeOwnedByCaller leave them all in (only the
    system's types are not requestable, and mturk-local does not list those). A type named exactly as the
    query is ranked first, as a search ranks it: a caller looking a type up by name reads the first page."""
    page = page_of("ListQualificationTypes", p, width=2)
    where, args = _search_terms(p.get("Query"))
    rank, after_seq = page.after or (-1, 0)
    rows = db.execute(
        "SELECT * FROM (SELECT *, CASE WHEN lower(name) = lower(?) THEN 0 ELSE 1 END AS rank"
        f" FROM qualification_type WHERE {where}) WHERE (rank, seq) > (?, ?) ORDER BY rank, seq LIMIT ?",
        ((p.get("Query") or "").strip(), *args, rank, after_seq, page.size)).fetchall()
    last = (int(rows[-1]["rank"]), int(rows[-1]["seq"])) if rows else None
    return page_result(page, "QualificationTypes", [_type_view(r) for r in rows], last)


def delete_qualification_type(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = _load_type(db, p["QualificationTypeId"])
    db.execute("UPDATE qualification_type SET deleted = 1 WHERE id = ?", (row["id"],))
    return {}


# -- workers' qualifications -----------------------------------------------------------------------------


def associate(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = _load_type(db, p["QualificationTypeId"])
    if row["status"] != "Active":
        raise RequestFault("AWS.MechanicalTurk.QualificationTypeNotActive",
                           f"QualificationType {row['id']} is not Active.")
    db.execute("INSERT INTO qualification (type_id, worker_id, value, status, grant_time) VALUES (?,?,?,'Granted',?)"
               " ON CONFLICT (type_id, worker_id) DO UPDATE SET value = excluded.value, status = 'Granted',"
               " grant_time = excluded.grant_time", (row["id"], p["WorkerId"], p.get("IntegerValue", 1), now))
    return {}


def disassociate(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = _load_type(db, p["QualificationTypeId"])
    changed = db.execute("UPDATE qualification SET status = 'Revoked' WHERE type_id = ? AND worker_id = ?"
                         " AND status = 'Granted'", (row["id"], p["WorkerId"])).rowcount
    if not changed:
        raise RequestFault("AWS.MechanicalTurk.QualificationDoesNotExist",
                           f"You requested a Qualification that does not exist. Worker {p['WorkerId']} does not "
                           f"hold QualificationType {row['id']}.")
    return {}


def list_workers_with_qualification_type(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = _load_type(db, p["QualificationTypeId"])
    page = page_of("ListWorkersWithQualificationType", p)
    rows = db.execute("SELECT * FROM qualification WHERE type_id = ? AND status = ? AND seq > ? ORDER BY seq LIMIT ?",
                      (row["id"], p.get("Status", "Granted"), page.after_seq, page.size)).fetchall()
    items = [{"QualificationTypeId": r["type_id"], "WorkerId": r["worker_id"], "GrantTime": r["grant_time"],
              "IntegerValue": r["value"], "Status": r["status"]} for r in rows]
    return seq_result(page, "Qualifications", items, rows)


# -- blocks and notifications ----------------------------------------------------------------------------


def create_worker_block(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    reason = v.text("Reason", p["Reason"], 1024, required=True)
    db.execute("INSERT INTO worker_block (worker_id, reason) VALUES (?, ?)"
               " ON CONFLICT (worker_id) DO UPDATE SET reason = excluded.reason", (p["WorkerId"], reason))
    return {}


def delete_worker_block(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    db.execute("DELETE FROM worker_block WHERE worker_id = ?", (p["WorkerId"],))
    return {}


def list_worker_blocks(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    page = page_of("ListWorkerBlocks", p)
    rows = db.execute("SELECT * FROM worker_block WHERE seq > ? ORDER BY seq LIMIT ?",
                      (page.after_seq, page.size)).fetchall()
    items = [{"WorkerId": r["worker_id"], "Reason": r["reason"]} for r in rows]
    return seq_result(page, "WorkerBlocks", items, rows)


def notify_workers(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    subject = v.text("Subject", p["Subject"], 200, required=True)
    message = v.text("MessageText", p["MessageText"], 4096, required=True)
    if not 1 <= len(p["WorkerIds"]) <= 100:
        raise invalid("WorkerIds", len(p["WorkerIds"]), "Notify between 1 and 100 workers at a time.")
    failures = []
    for worker_id in p["WorkerIds"]:
        # MTurk lets a requester message only workers who have worked for them.
        if db.execute("SELECT 1 FROM assignment WHERE worker_id = ? LIMIT 1", (worker_id,)).fetchone() is None:
            failures.append({"NotifyWorkersFailureCode": "HardFailure", "WorkerId": worker_id,
                             "NotifyWorkersFailureMessage": f"Worker {worker_id} has not worked for you."})
            continue
        db.execute("INSERT INTO notification (worker_id, subject, message, sent) VALUES (?,?,?,?)",
                   (worker_id, subject, message, now))
    return {"NotifyWorkersFailureStatuses": failures}
