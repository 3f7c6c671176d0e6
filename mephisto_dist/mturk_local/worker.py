"""The worker's side of mturk-local: finding HITs, preview, accept, return and submit, shared by the
HTML pages and the JSON API for simulated workers."""

from __future__ import annotations

import re
import sqlite3
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape

from mephisto_dist.mturk_local.faults import RequestFault
from mephisto_dist.mturk_local.hits import counts_for, load_hit, status_of
from mephisto_dist.mturk_local.qualifications import is_blocked, worker_meets
from mephisto_dist.mturk_local.questions import parse_question
from mephisto_dist.mturk_local.store import new_id

PREVIEW_ASSIGNMENT_ID = "ASSIGNMENT_ID_NOT_AVAILABLE"
WORKER_ID = re.compile(r"A[A-Z0-9]{1,63}")
ANSWER_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"


class WorkerRefusal(Exception):
    """What the marketplace tells a worker who cannot do what they asked; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def check_worker_id(worker_id: str | None) -> str:
    if not worker_id or not WORKER_ID.fullmatch(worker_id):
        raise WorkerRefusal(f"worker id {worker_id!r} is not an MTurk worker id (A followed by capitals and digits)",
                            400)
    return worker_id


def _hit_row(db: sqlite3.Connection, hit_id: str) -> sqlite3.Row:
    try:
        hit = load_hit(db, hit_id)
    except RequestFault as fault:
        raise WorkerRefusal(fault.message, 404) from None
    if hit["disposed"]:
        raise WorkerRefusal(f"HIT {hit_id} is no longer available", 404)
    return hit


def frame_url(question_xml: str, params: dict[str, str]) -> str:
    """The ExternalURL with MTurk's four parameters added to whatever query it already has."""
    parts = urlsplit(parse_question(question_xml).content)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def available_hits(db: sqlite3.Connection, worker_id: str | None, now: float) -> list[dict[str, Any]]:
    rows = db.execute("SELECT h.*, t.title, t.description, t.keywords, t.reward, t.assignment_duration_s,"
                      " t.qualification_requirements FROM hit h JOIN hit_type t ON t.id = h.hit_type_id"
                      " WHERE h.disposed = 0 AND h.expiration > ? ORDER BY h.seq", (now,)).fetchall()
    counts = counts_for(db, [r["id"] for r in rows])
    held = set() if worker_id is None else {r[0] for r in db.execute(
        "SELECT hit_id FROM assignment WHERE worker_id = ? AND status NOT IN ('Returned', 'Abandoned')", (worker_id,))}
    listed = []
    for row in rows:
        status, available = status_of(row, counts[row["id"]], now)
        if status != "Assignable" or row["id"] in held:
            continue
        if worker_id is not None and not worker_meets(db, worker_id, row["qualification_requirements"], "Discover"):
            continue
        listed.append({"HITId": row["id"], "Title": row["title"], "Description": row["description"],
                       "Keywords": row["keywords"], "Reward": row["reward"], "Available": available,
                       "Expiration": row["expiration"], "AssignmentDurationInSeconds": row["assignment_duration_s"]})
    return listed


def preview(db: sqlite3.Connection, hit_id: str, worker_id: str | None, submit_to: str) -> dict[str, Any]:
    hit = _hit_row(db, hit_id)
    if worker_id is not None and not worker_meets(db, worker_id, hit["qualification_requirements"], "Preview"):
        raise WorkerRefusal("you do not meet the qualification requirements to preview this HIT", 403)
    params = {"assignmentId": PREVIEW_ASSIGNMENT_ID, "hitId": hit_id}
    return {"HITId": hit_id, "Title": hit["title"], "Description": hit["description"], "Reward": hit["reward"],
            "FrameHeight": parse_question(hit["question"]).frame_height, **frame(hit["question"], params)}


def frame(question_xml: str, params: dict[str, str]) -> dict[str, str]:
    question = parse_question(question_xml)
    if question.kind == "external":
        return {"url": frame_url(question_xml, params)}
    return {"html": question.content}


def accept(db: sqlite3.Connection, hit_id: str, worker_id: str, now: float, submit_to: str) -> dict[str, Any]:
    check_worker_id(worker_id)
    hit = _hit_row(db, hit_id)
    if is_blocked(db, worker_id):
        raise WorkerRefusal("you are blocked by this requester", 403)
    if not worker_meets(db, worker_id, hit["qualification_requirements"], "Accept"):
        raise WorkerRefusal("you do not meet the qualification requirements to accept this HIT", 403)
    if db.execute("SELECT 1 FROM assignment WHERE hit_id = ? AND worker_id = ? AND status NOT IN"
                  " ('Returned', 'Abandoned')", (hit_id, worker_id)).fetchone():
        raise WorkerRefusal("you have already accepted this HIT")
    status, _ = status_of(hit, counts_for(db, [hit_id])[hit_id], now)
    if status != "Assignable":
        raise WorkerRefusal(f"this HIT is {status}: there are no more assignments available")
    assignment_id = new_id()
    deadline = now + hit["assignment_duration_s"]  # the HIT's expiry does not shorten a held assignment
    db.execute("INSERT INTO assignment (id, hit_id, worker_id, status, accept_time, deadline) VALUES (?,?,?,?,?,?)",
               (assignment_id, hit_id, worker_id, "Accepted", now, deadline))
    params = {"assignmentId": assignment_id, "hitId": hit_id, "workerId": worker_id, "turkSubmitTo": submit_to}
    return {"AssignmentId": assignment_id, "HITId": hit_id, "Deadline": deadline,
            "FrameHeight": parse_question(hit["question"]).frame_height, **frame(hit["question"], params)}


def _held(db: sqlite3.Connection, assignment_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT * FROM assignment WHERE id = ?", (assignment_id,)).fetchone()
    if row is None:
        raise WorkerRefusal(f"assignment {assignment_id} does not exist", 404)
    if row["status"] != "Accepted":
        raise WorkerRefusal(f"assignment {assignment_id} is {row['status'].lower()}, no longer held")
    return row


def return_assignment(db: sqlite3.Connection, assignment_id: str, worker_id: str | None) -> None:
    row = _held(db, assignment_id)
    if worker_id is not None and row["worker_id"] != worker_id:
        raise WorkerRefusal(f"assignment {assignment_id} is not yours", 403)
    db.execute("UPDATE assignment SET status = 'Returned' WHERE id = ?", (assignment_id,))


def submit(db: sqlite3.Connection, assignment_id: str, fields: dict[str, str], now: float) -> dict[str, Any]:
    """``/mturk/externalSubmit``: the answer is every posted field but ``assignmentId``, kept as MTurk keeps it
    (QuestionFormAnswers XML, each field as FreeText)."""
    row = _held(db, assignment_id)
    hit = load_hit(db, row["hit_id"])
    answers = "".join(f"<Answer><QuestionIdentifier>{escape(k)}</QuestionIdentifier><FreeText>{escape(val)}"
                      "</FreeText></Answer>" for k, val in fields.items() if k != "assignmentId")
    answer = f'<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="{ANSWER_NS}">{answers}</QuestionFormAnswers>'
    db.execute("UPDATE assignment SET status = 'Submitted', submit_time = ?, auto_approval_time = ?, answer = ?"
               " WHERE id = ?", (now, now + hit["auto_approval_delay_s"], answer, assignment_id))
    return {"AssignmentId": assignment_id, "HITId": row["hit_id"], "WorkerId": row["worker_id"],
            "AssignmentStatus": "Submitted"}


def worker_assignments(db: sqlite3.Connection, worker_id: str) -> list[dict[str, Any]]:
    rows = db.execute("SELECT id, hit_id, status, accept_time, deadline, submit_time FROM assignment"
                      " WHERE worker_id = ? ORDER BY seq", (worker_id,)).fetchall()
    return [{"AssignmentId": r["id"], "HITId": r["hit_id"], "Status": r["status"], "AcceptTime": r["accept_time"],
             "Deadline": r["deadline"], "SubmitTime": r["submit_time"]} for r in rows]


def worker_messages(db: sqlite3.Connection, worker_id: str) -> dict[str, Any]:
    notes = db.execute("SELECT subject, message, sent FROM notification WHERE worker_id = ? ORDER BY seq",
                       (worker_id,)).fetchall()
    bonuses = db.execute("SELECT assignment_id, amount, reason, grant_time FROM bonus WHERE worker_id = ? ORDER BY seq",
                         (worker_id,)).fetchall()
    quals = db.execute("SELECT type_id, value, status FROM qualification WHERE worker_id = ? ORDER BY seq",
                       (worker_id,)).fetchall()
    return {"Notifications": [dict(r) for r in notes], "Bonuses": [dict(r) for r in bonuses],
            "Qualifications": [dict(r) for r in quals], "Blocked": is_blocked(db, worker_id)}
