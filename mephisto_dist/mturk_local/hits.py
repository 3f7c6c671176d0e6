"""HIT types, HITs and their assignments as the requester sees them: creation with UniqueRequestToken
deduplication, the HIT status machine, expiry, deletion and paged listings.

A HIT's status is derived, never stored: Assignable while it has not expired and has assignments left;
Unassignable while no assignment is left but a worker still holds one; Reviewable once it expired or every
assignment is submitted, and nobody holds one (Reviewing instead once the requester marked it so);
Disposed once deleted. Times are epoch seconds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mephisto_dist.mturk_local import validation as v
from mephisto_dist.mturk_local.faults import RequestFault, assignment_missing, hit_missing, invalid
from mephisto_dist.mturk_local.paging import page_of, seq_result
from mephisto_dist.mturk_local.qualifications import check_requirements
from mephisto_dist.mturk_local.questions import parse_question
from mephisto_dist.mturk_local.store import new_id

TOKEN_TTL_S = 24 * 3600
SUBMITTED_STATUSES = ("Submitted", "Approved", "Rejected")


@dataclass(frozen=True)
class Counts:
    pending: int
    completed: int
    unreviewed: int


def sweep(db: sqlite3.Connection, now: float) -> None:
    """What time alone changes: held assignments past their deadline are abandoned, submitted ones past
    their auto-approval time are approved (and paid)."""
    db.execute("UPDATE assignment SET status = 'Abandoned' WHERE status = 'Accepted' AND deadline <= ?", (now,))
    due = db.execute(
        "SELECT a.id, t.reward FROM assignment a JOIN hit h ON h.id = a.hit_id JOIN hit_type t ON t.id = h.hit_type_id"
        " WHERE a.status = 'Submitted' AND a.auto_approval_time <= ?", (now,)).fetchall()
    for row in due:
        db.execute("UPDATE assignment SET status = 'Approved', approval_time = ? WHERE id = ?", (now, row["id"]))
        charge(db, Decimal(row["reward"]))


def charge(db: sqlite3.Connection, amount: Decimal) -> None:
    balance = Decimal(db.execute("SELECT value FROM account WHERE key = 'balance'").fetchone()[0])
    db.execute("UPDATE account SET value = ? WHERE key = 'balance'", (str(balance - amount),))


def counts_for(db: sqlite3.Connection, hit_ids: Sequence[str]) -> dict[str, Counts]:
    found: dict[str, dict[str, int]] = {hit_id: {} for hit_id in hit_ids}
    marks = ",".join("?" * len(hit_ids))
    for row in db.execute(f"SELECT hit_id, status, COUNT(*) FROM assignment WHERE hit_id IN ({marks})"
                          " GROUP BY hit_id, status", list(hit_ids)):
        found[row[0]][row[1]] = int(row[2])
    return {hit_id: Counts(c.get("Accepted", 0), sum(c.get(s, 0) for s in SUBMITTED_STATUSES),
                           c.get("Submitted", 0)) for hit_id, c in found.items()}


def status_of(hit: sqlite3.Row, counts: Counts, now: float) -> tuple[str, int]:
    """The HIT's status and how many of its assignments no worker has taken. MTurk keeps counting those
    after the HIT expired: Mephisto tells an expired HIT from a completed one (both Reviewable) by a
    NumberOfAssignmentsAvailable above 0."""
    if hit["disposed"]:
        return "Disposed", 0
    available = hit["max_assignments"] - counts.pending - counts.completed
    if available > 0 and hit["expiration"] > now:
        return "Assignable", available
    if counts.pending:
        return "Unassignable", available
    return ("Reviewing" if hit["reviewing"] else "Reviewable"), available


_HIT_ROWS = ("SELECT h.*, t.title, t.description, t.keywords, t.reward, t.assignment_duration_s,"
             " t.auto_approval_delay_s, t.qualification_requirements FROM hit h JOIN hit_type t ON t.id = h.hit_type_id")


def load_hit(db: sqlite3.Connection, hit_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute(_HIT_ROWS + " WHERE h.id = ?", (hit_id,)).fetchone()
    if row is None:
        raise hit_missing(hit_id)
    return row


def hit_view(hit: sqlite3.Row, counts: Counts, now: float) -> dict[str, Any]:
    status, available = status_of(hit, counts, now)
    view: dict[str, Any] = {
        "HITId": hit["id"], "HITTypeId": hit["hit_type_id"], "HITGroupId": hit["hit_type_id"],
        "CreationTime": hit["created"], "Title": hit["title"], "Description": hit["description"],
        "Question": hit["question"], "HITStatus": status, "MaxAssignments": hit["max_assignments"],
        "Reward": hit["reward"], "AutoApprovalDelayInSeconds": hit["auto_approval_delay_s"],
        "Expiration": hit["expiration"], "AssignmentDurationInSeconds": hit["assignment_duration_s"],
        "QualificationRequirements": json.loads(hit["qualification_requirements"]),
        "HITReviewStatus": "NotReviewed", "NumberOfAssignmentsPending": counts.pending,
        "NumberOfAssignmentsAvailable": available, "NumberOfAssignmentsCompleted": counts.completed,
    }
    if hit["keywords"]:
        view["Keywords"] = hit["keywords"]
    if hit["annotation"]:
        view["RequesterAnnotation"] = hit["annotation"]
    return view


def describe_hit(db: sqlite3.Connection, hit_id: str, now: float) -> dict[str, Any]:
    return hit_view(load_hit(db, hit_id), counts_for(db, [hit_id])[hit_id], now)


# -- operations ------------------------------------------------------------------------------------------


def create_hit_type(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    """Identical properties give the same HIT type, as on MTurk."""
    props = {
        "title": v.text("Title", p["Title"], 128, required=True),
        "description": v.text("Description", p["Description"], 2000, required=True),
        "keywords": v.text("Keywords", p.get("Keywords"), 1000) or None,
        "reward": str(v.amount("Reward", p["Reward"])),
        "assignment_duration_s": v.seconds("AssignmentDurationInSeconds", p["AssignmentDurationInSeconds"],
                                           v.MIN_DURATION_S, v.MAX_DURATION_S),
        "auto_approval_delay_s": v.seconds("AutoApprovalDelayInSeconds",
                                           p.get("AutoApprovalDelayInSeconds", 2592000), 0,
                                           v.MAX_AUTO_APPROVAL_DELAY_S),
        "qualification_requirements": json.dumps(check_requirements(db, p.get("QualificationRequirements", [])),
                                                 sort_keys=True),
    }
    fingerprint = hashlib.sha256(json.dumps(props, sort_keys=True).encode()).hexdigest()
    row = db.execute("SELECT id FROM hit_type WHERE fingerprint = ?", (fingerprint,)).fetchone()
    if row is not None:
        return {"HITTypeId": row[0]}
    type_id = new_id()
    db.execute("INSERT INTO hit_type (id, fingerprint, title, description, keywords, reward, assignment_duration_s,"
               " auto_approval_delay_s, qualification_requirements, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (type_id, fingerprint, *props.values(), now))
    return {"HITTypeId": type_id}


def create_hit(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    type_params: dict[str, Any] = {k: p[k] for k in ("Title", "Description", "Keywords", "Reward", "AssignmentDurationInSeconds",
                                     "AutoApprovalDelayInSeconds", "QualificationRequirements") if k in p}
    hit_type_id = create_hit_type(db, type_params, now)["HITTypeId"]
    return create_hit_with_hit_type(db, {**p, "HITTypeId": hit_type_id}, now)


def create_hit_with_hit_type(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    if db.execute("SELECT 1 FROM hit_type WHERE id = ?", (p["HITTypeId"],)).fetchone() is None:
        raise RequestFault("AWS.MechanicalTurk.HITTypeDoesNotExist", f"HITType {p['HITTypeId']} does not exist.")
    if "HITLayoutId" in p or "Question" not in p:
        raise invalid("Question", None, "mturk-local needs a Question (HIT layouts are not served).")
    parse_question(p["Question"])
    lifetime = v.seconds("LifetimeInSeconds", p["LifetimeInSeconds"], v.MIN_DURATION_S, v.MAX_DURATION_S)
    max_assignments = p.get("MaxAssignments", 1)
    if not 1 <= max_assignments <= 1_000_000:
        raise invalid("MaxAssignments", max_assignments, "It must be between 1 and 1000000.")
    annotation = v.text("RequesterAnnotation", p.get("RequesterAnnotation"), 255)
    token = p.get("UniqueRequestToken")
    if token:
        earlier = db.execute("SELECT result FROM request_token WHERE operation = 'CreateHIT' AND token = ?"
                             " AND created > ?", (token, now - TOKEN_TTL_S)).fetchone()
        if earlier is not None:
            raise RequestFault("AWS.MechanicalTurk.HitAlreadyExists",
                               f"There is already a HIT which exists with the same UniqueRequestToken. "
                               f"The HIT Id is {earlier[0]}.")
    hit_id = new_id()
    db.execute("INSERT INTO hit (id, hit_type_id, question, annotation, max_assignments, created, expiration)"
               " VALUES (?,?,?,?,?,?,?)",
               (hit_id, p["HITTypeId"], p["Question"], annotation, max_assignments, now, now + lifetime))
    if token:
        db.execute("INSERT OR REPLACE INTO request_token (operation, token, result, created)"
                   " VALUES ('CreateHIT', ?, ?, ?)", (token, hit_id, now))
    return {"HIT": describe_hit(db, hit_id, now)}


def get_hit(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    return {"HIT": describe_hit(db, p["HITId"], now)}


def list_hits(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    page = page_of("ListHITs", p)
    rows = db.execute(_HIT_ROWS + " WHERE h.disposed = 0 AND h.seq > ? ORDER BY h.seq LIMIT ?",
                      (page.after_seq, page.size)).fetchall()
    counts = counts_for(db, [r["id"] for r in rows])
    return seq_result(page, "HITs", [hit_view(r, counts[r["id"]], now) for r in rows], rows)


def list_reviewable_hits(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    """HITs in the asked status (Reviewable by default, or Reviewing), optionally of one HIT type."""
    wanted = p.get("Status") or "Reviewable"
    page = page_of("ListReviewableHITs", p)
    shown: list[sqlite3.Row] = []
    last_seq = page.after_seq
    # The status is derived, so rows are read in batches and filtered until the page is full.
    while len(shown) < page.size:
        rows = db.execute(_HIT_ROWS + " WHERE h.disposed = 0 AND h.seq > ? AND (? IS NULL OR h.hit_type_id = ?)"
                          " ORDER BY h.seq LIMIT 200", (last_seq, p.get("HITTypeId"), p.get("HITTypeId"))).fetchall()
        if not rows:
            break
        counts = counts_for(db, [r["id"] for r in rows])
        for row in rows:
            last_seq = row["seq"]
            if status_of(row, counts[row["id"]], now)[0] == wanted:
                shown.append(row)
                if len(shown) == page.size:
                    break
    return seq_result(page, "HITs", [describe_hit(db, r["id"], now) for r in shown], shown)


def update_hit_review_status(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    """Reviewable -> Reviewing, or back with ``Revert``."""
    hit = load_hit(db, p["HITId"])
    status, _ = status_of(hit, counts_for(db, [hit["id"]])[hit["id"]], now)
    revert = bool(p.get("Revert"))
    if status != ("Reviewing" if revert else "Reviewable"):
        raise _wrong_hit_state(status, "Reviewing" if revert else "Reviewable")
    db.execute("UPDATE hit SET reviewing = ? WHERE id = ?", (0 if revert else 1, hit["id"]))
    return {}


def update_expiration(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    hit = load_hit(db, p["HITId"])
    if hit["disposed"]:
        raise _wrong_hit_state("Disposed", "Assignable, Unassignable, Reviewable")
    # A time in the past expires the HIT at once (MTurk's documented way to expire one early).
    expire_at = max(float(p["ExpireAt"]), now)
    if expire_at > hit["created"] + v.MAX_DURATION_S:
        raise invalid("ExpireAt", p["ExpireAt"], "A HIT cannot live longer than 365 days.")
    db.execute("UPDATE hit SET expiration = ? WHERE id = ?", (expire_at, hit["id"]))
    return {}


def delete_hit(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    hit = load_hit(db, p["HITId"])
    counts = counts_for(db, [hit["id"]])[hit["id"]]
    status, _ = status_of(hit, counts, now)
    if status not in ("Reviewing", "Reviewable"):
        raise _wrong_hit_state(status, "Reviewing, Reviewable")
    if counts.unreviewed:
        raise RequestFault("AWS.MechanicalTurk.InvalidHITState",
                           f"This HIT has {counts.unreviewed} submitted assignment(s) that are neither approved "
                           "nor rejected; approve or reject them before deleting the HIT.")
    db.execute("UPDATE hit SET disposed = 1 WHERE id = ?", (hit["id"],))
    return {}


def _wrong_hit_state(status: str, allowed: str) -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.InvalidHITState",
                        f"This HIT is currently in the state '{status}'. "
                        f"This operation can be called with a status of: {allowed}")


def assignment_view(row: sqlite3.Row) -> dict[str, Any]:
    view = {"AssignmentId": row["id"], "WorkerId": row["worker_id"], "HITId": row["hit_id"],
            "AssignmentStatus": row["status"], "AutoApprovalTime": row["auto_approval_time"],
            "AcceptTime": row["accept_time"], "SubmitTime": row["submit_time"],
            "ApprovalTime": row["approval_time"], "RejectionTime": row["rejection_time"],
            "Deadline": row["deadline"], "Answer": row["answer"], "RequesterFeedback": row["feedback"]}
    return {k: val for k, val in view.items() if val is not None}


def list_assignments_for_hit(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    load_hit(db, p["HITId"])
    statuses = p.get("AssignmentStatuses") or list(SUBMITTED_STATUSES)
    page = page_of("ListAssignmentsForHIT", p)
    marks = ",".join("?" * len(statuses))
    rows = db.execute(f"SELECT * FROM assignment WHERE hit_id = ? AND status IN ({marks}) AND seq > ?"
                      " ORDER BY seq LIMIT ?", (p["HITId"], *statuses, page.after_seq, page.size)).fetchall()
    return seq_result(page, "Assignments", [assignment_view(r) for r in rows], rows)


def load_assignment(db: sqlite3.Connection, assignment_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT * FROM assignment WHERE id = ?", (assignment_id,)).fetchone()
    # Held, returned and abandoned assignments are not the requester's to see.
    if row is None or row["status"] not in SUBMITTED_STATUSES:
        raise assignment_missing(assignment_id)
    return row


def get_assignment(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = load_assignment(db, p["AssignmentId"])
    return {"Assignment": assignment_view(row), "HIT": describe_hit(db, row["hit_id"], now)}
