"""Studies and their submissions, as Prolific keeps them: statuses (with the transient ``PROCESSING``),
places that only grow, a study that goes to ``AWAITING REVIEW`` when no place is left (or it is stopped),
to ``COMPLETED`` once every submission in it is reviewed, and comes back when a place is added or freed,
the fields that stay editable after publishing, submission review, and the cost calculator."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from mephisto_dist.prolific_local import eligibility
from mephisto_dist.prolific_local.faults import ProlificFault, invalid, not_found
from mephisto_dist.prolific_local.store import new_id

UNPUBLISHED, ACTIVE, PAUSED, AWAITING_REVIEW, COMPLETED = (
    "UNPUBLISHED", "ACTIVE", "PAUSED", "AWAITING REVIEW", "COMPLETED")
PROCESSING = "PROCESSING"  # undocumented, shown while Prolific changes a study or a submission
RESERVED, RETURNED, TIMED_OUT, APPROVED, REJECTED = "RESERVED", "RETURNED", "TIMED-OUT", "APPROVED", "REJECTED"
HOLDING_A_PLACE = (RESERVED, ACTIVE, AWAITING_REVIEW, APPROVED, REJECTED)
UNREVIEWED = (RESERVED, ACTIVE, AWAITING_REVIEW)  # submissions a study waits on before it is COMPLETED
REQUIRED = ("name", "description", "external_study_url", "prolific_id_option", "estimated_completion_time",
            "reward")
EDITABLE_WHEN_PUBLISHED = frozenset({"internal_name", "total_available_places"})
ID_OPTIONS = ("question", "url_parameters", "not_required")
REJECTION_CATEGORIES = ("TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
                        "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER")
MIN_REJECTION_MESSAGE = 100


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _shown(status: str, processing_until: float, now: float) -> str:
    return PROCESSING if now < processing_until else status


def study_row(db: sqlite3.Connection, study_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT * FROM study WHERE id = ?", (study_id,)).fetchone()
    if row is None:
        raise not_found("Study", study_id)
    return row


def places_taken(db: sqlite3.Connection, study_id: str) -> int:
    marks = ",".join("?" * len(HOLDING_A_PLACE))
    return int(db.execute(f"SELECT COUNT(*) FROM submission WHERE study_id = ? AND status IN ({marks})",
                          (study_id, *HOLDING_A_PLACE)).fetchone()[0])


def study_view(db: sqlite3.Connection, row: sqlite3.Row, now: float) -> dict[str, Any]:
    body = json.loads(row["body"])
    taken = places_taken(db, row["id"])
    return {**body, "id": row["id"], "project": row["project_id"],
            "status": _shown(row["status"], row["processing_until"], now),
            "total_available_places": row["total_available_places"], "places_taken": taken,
            "number_of_submissions": int(db.execute("SELECT COUNT(*) FROM submission WHERE study_id = ?",
                                                    (row["id"],)).fetchone()[0]),
            "date_created": iso(row["created"]), "published_at": iso(row["published"])}


def _unreviewed(db: sqlite3.Connection, study_id: str) -> int:
    marks = ",".join("?" * len(UNREVIEWED))
    return int(db.execute(f"SELECT COUNT(*) FROM submission WHERE study_id = ? AND status IN ({marks})",
                          (study_id, *UNREVIEWED)).fetchone()[0])


def settle(db: sqlite3.Connection, study_id: str) -> None:
    """Prolific's own moves after a change: no place left sends an active study to review by itself; a
    study waiting for review whose submissions are all reviewed (approved or rejected) is completed; a
    place added or freed brings a study waiting for review, or completed, back."""
    row = study_row(db, study_id)
    free = row["total_available_places"] - places_taken(db, study_id)
    status = row["status"]
    if status == ACTIVE and free <= 0:
        status = AWAITING_REVIEW
    elif status in (AWAITING_REVIEW, COMPLETED) and free > 0 and row["published"] is not None \
            and not json.loads(row["body"]).get("_stopped"):
        status = ACTIVE
    if status == AWAITING_REVIEW and _unreviewed(db, study_id) == 0:
        status = COMPLETED
    if status != row["status"]:
        db.execute("UPDATE study SET status = ? WHERE id = ?", (status, study_id))


def _check_fields(data: dict[str, Any], *, partial: bool) -> None:
    missing = [name for name in REQUIRED if not partial and data.get(name) in (None, "")]
    if missing:
        raise ProlificFault(400, {name: ["This field is required."] for name in missing})
    if "prolific_id_option" in data and data["prolific_id_option"] not in ID_OPTIONS:
        raise invalid("prolific_id_option", f'"{data["prolific_id_option"]}" is not a valid choice.')
    for name in ("reward", "estimated_completion_time"):
        if name in data and (not isinstance(data[name], int | float) or data[name] <= 0):
            raise invalid(name, "Ensure this value is greater than 0.")
    places = data.get("total_available_places")
    if places is not None and (not isinstance(places, int) or places < 0):
        raise invalid("total_available_places", "Ensure this value is a whole number, 0 or more.")
    codes = data.get("completion_codes")
    if codes is not None and (not isinstance(codes, list)
                              or not all(isinstance(c, dict) and c.get("code") for c in codes)):
        raise invalid("completion_codes", "Each completion code needs a code.")
    if "eligibility_requirements" in data:
        eligibility.check(data["eligibility_requirements"])


def create_study(db: sqlite3.Connection, data: dict[str, Any], now: float) -> dict[str, Any]:
    _check_fields(data, partial=False)
    study_id = new_id()
    body = {key: value for key, value in data.items() if key not in ("total_available_places", "project", "status")}
    body.setdefault("internal_name", data["name"])
    body.setdefault("completion_codes", [])
    body.setdefault("eligibility_requirements", [])
    body.setdefault("completion_option", "code")
    db.execute("INSERT INTO study (id, project_id, body, status, total_available_places, created) "
               "VALUES (?, ?, ?, ?, ?, ?)", (study_id, data.get("project"), json.dumps(body), UNPUBLISHED,
                                            int(data.get("total_available_places") or 0), now))
    return study_view(db, study_row(db, study_id), now)


def update_study(db: sqlite3.Connection, study_id: str, data: dict[str, Any], now: float) -> dict[str, Any]:
    row = study_row(db, study_id)
    if row["status"] != UNPUBLISHED:
        frozen = sorted(set(data) - EDITABLE_WHEN_PUBLISHED)
        if frozen:
            raise ProlificFault(400, {name: ["This field cannot be changed once the study is published."]
                                      for name in frozen})
    _check_fields(data, partial=True)
    places = data.get("total_available_places")
    if places is not None and row["status"] != UNPUBLISHED and places < row["total_available_places"]:
        raise invalid("total_available_places", "The number of places can only be increased.")
    body = json.loads(row["body"]) | {k: v for k, v in data.items() if k not in ("total_available_places", "status")}
    db.execute("UPDATE study SET body = ?, total_available_places = ? WHERE id = ?",
               (json.dumps(body), row["total_available_places"] if places is None else int(places), study_id))
    if places is not None and places > row["total_available_places"] and body.get("_stopped"):
        body.pop("_stopped")  # adding places re-opens a stopped study, as Prolific does
        db.execute("UPDATE study SET body = ? WHERE id = ?", (json.dumps(body), study_id))
    settle(db, study_id)
    return study_view(db, study_row(db, study_id), now)


def delete_study(db: sqlite3.Connection, study_id: str) -> None:
    if study_row(db, study_id)["status"] != UNPUBLISHED:
        raise ProlificFault(400, "Only an unpublished study can be deleted.")
    db.execute("DELETE FROM study WHERE id = ?", (study_id,))


def transition_study(db: sqlite3.Connection, study_id: str, action: str, now: float,
                     processing_s: float) -> dict[str, Any]:
    row = study_row(db, study_id)
    status = row["status"]
    if now < row["processing_until"]:
        raise ProlificFault(400, "The study is being processed; try again in a moment.")
    body = json.loads(row["body"])
    if action == "PUBLISH" and status == UNPUBLISHED:
        if not body.get("completion_codes") and not body.get("completion_code"):
            raise invalid("completion_codes", "A study needs a completion code to be published.")
        if row["total_available_places"] < 1:
            raise invalid("total_available_places", "A study needs at least one place to be published.")
        db.execute("UPDATE study SET status = ?, published = ?, processing_until = ? WHERE id = ?",
                   (ACTIVE, now, now + processing_s, study_id))
    elif action == "PAUSE" and status == ACTIVE:
        db.execute("UPDATE study SET status = ? WHERE id = ?", (PAUSED, study_id))
    elif action == "START" and status == PAUSED:
        db.execute("UPDATE study SET status = ? WHERE id = ?", (ACTIVE, study_id))
        settle(db, study_id)
    elif action == "STOP" and status in (ACTIVE, PAUSED, AWAITING_REVIEW):
        # Prolific has no STOPPED: a stopped study waits for review, as one whose places are all taken (and
        # is completed at once when nothing is left to review).
        body["_stopped"] = True
        db.execute("UPDATE study SET status = ?, body = ? WHERE id = ?", (AWAITING_REVIEW, json.dumps(body), study_id))
        settle(db, study_id)
    else:
        raise ProlificFault(400, f"A study that is {status} cannot take the action {action}.")
    return study_view(db, study_row(db, study_id), now)


def public_study(view: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in view.items() if not key.startswith("_")}


def study_cost(data: dict[str, Any]) -> dict[str, Any]:
    """``study-cost-calculator/``: what a study of ``total_available_places`` at ``reward`` (cents) costs, in
    cents. Prolific adds its fees and VAT; prolific-local charges none, so the cost is the rewards."""
    for name in ("reward", "total_available_places"):
        value = data.get(name)
        if value is None:
            raise invalid(name, "This field is required.")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise invalid(name, "A valid number is required.")
    return {"total_cost": data["reward"] * data["total_available_places"]}


# -- submissions ----------------------------------------------------------------------------------------


def submission_row(db: sqlite3.Connection, submission_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT * FROM submission WHERE id = ?", (submission_id,)).fetchone()
    if row is None:
        raise not_found("Submission", submission_id)
    return row


def submission_view(row: sqlite3.Row, now: float) -> dict[str, Any]:
    return {"id": row["id"], "study_id": row["study_id"], "participant": row["participant_id"],
            "participant_id": row["participant_id"], "status": _shown(row["status"], row["processing_until"], now),
            "started_at": iso(row["started"]), "completed_at": iso(row["completed"]),
            "entered_code": row["entered_code"] or "", "study_code": row["entered_code"] or "",
            "is_complete": row["completed"] is not None, "return_requested": None,
            "bonus_payments": json.loads(row["bonus_payments"]),
            "time_taken": None if row["completed"] is None else int(row["completed"] - row["started"])}


def transition_submission(db: sqlite3.Connection, submission_id: str, data: dict[str, Any], now: float,
                          processing_s: float) -> dict[str, Any]:
    row = submission_row(db, submission_id)
    action = data.get("action")
    if now < row["processing_until"]:
        raise ProlificFault(400, "The submission is being processed; try again in a moment.")
    if action not in ("APPROVE", "REJECT"):
        raise invalid("action", f'"{action}" is not a valid choice.')
    if row["status"] != AWAITING_REVIEW:
        raise ProlificFault(400, f"A submission that is {row['status']} cannot be changed to {action}D.")
    if action == "REJECT":
        message = str(data.get("message") or "")
        category = data.get("rejection_category")
        if len(message) < MIN_REJECTION_MESSAGE:
            raise invalid("message", f"Ensure this field has at least {MIN_REJECTION_MESSAGE} characters.")
        if category not in REJECTION_CATEGORIES:
            raise invalid("rejection_category", f'"{category}" is not a valid choice.')
        db.execute("UPDATE submission SET status = ?, processing_until = ?, message = ?, rejection_category = ? "
                   "WHERE id = ?", (REJECTED, now + processing_s, message, category, submission_id))
    else:
        reward = int(json.loads(study_row(db, row["study_id"])["body"]).get("reward") or 0)
        db.execute("UPDATE submission SET status = ?, processing_until = ? WHERE id = ?",
                   (APPROVED, now + processing_s, submission_id))
        db.execute("UPDATE account SET value = CAST(value AS INTEGER) - ? WHERE key = 'balance_cents'", (reward,))
    settle(db, row["study_id"])
    return submission_view(submission_row(db, submission_id), now)


# -- the participant's side -------------------------------------------------------------------------------


def start_submission(db: sqlite3.Connection, study_id: str, participant_id: str, now: float) -> sqlite3.Row:
    """A participant takes a place (or finds the one they hold): refused unless the study is active with a
    place free."""
    if not participant_id.strip():
        raise ProlificFault(400, {"participant_id": ["This field is required."]})
    row = study_row(db, study_id)
    held: sqlite3.Row | None = db.execute(
        "SELECT * FROM submission WHERE study_id = ? AND participant_id = ? ORDER BY seq DESC",
        (study_id, participant_id)).fetchone()
    if held is not None and held["status"] == ACTIVE:
        return held
    if held is not None and held["status"] not in (RETURNED, TIMED_OUT):
        raise ProlificFault(400, "You have already taken part in this study.")
    if _shown(row["status"], row["processing_until"], now) != ACTIVE:
        raise ProlificFault(400, "This study is not available.")
    if places_taken(db, study_id) >= row["total_available_places"]:
        raise ProlificFault(400, "This study is full.")
    if not eligibility.eligible(db, json.loads(row["body"]).get("eligibility_requirements") or [], participant_id):
        raise ProlificFault(400, "You are not eligible for this study.")
    submission_id = new_id()
    db.execute("INSERT INTO submission (id, study_id, participant_id, status, started) VALUES (?, ?, ?, ?, ?)",
               (submission_id, study_id, participant_id, ACTIVE, now))
    settle(db, study_id)
    return submission_row(db, submission_id)


def study_url(row: sqlite3.Row, submission: sqlite3.Row) -> str:
    url = str(json.loads(row["body"])["external_study_url"])
    return (url.replace("{{%PROLIFIC_PID%}}", submission["participant_id"])
            .replace("{{%STUDY_ID%}}", row["id"]).replace("{{%SESSION_ID%}}", submission["id"]))


def complete(db: sqlite3.Connection, participant_id: str, code: str, now: float) -> sqlite3.Row:
    """The participant reached ``/submissions/complete?cc=CODE``: their active submission of the study
    with that completion code goes to review."""
    for held in db.execute("SELECT * FROM submission WHERE participant_id = ? AND status = ? ORDER BY seq DESC",
                           (participant_id, ACTIVE)).fetchall():
        body = json.loads(study_row(db, held["study_id"])["body"])
        codes = {c.get("code") for c in body.get("completion_codes") or []} | {body.get("completion_code")}
        if code in codes:
            db.execute("UPDATE submission SET status = ?, completed = ?, entered_code = ? WHERE id = ?",
                       (AWAITING_REVIEW, now, code, held["id"]))
            return submission_row(db, held["id"])
    raise ProlificFault(400, "This completion code does not match a study you are taking part in.")


def return_submission(db: sqlite3.Connection, submission_id: str, now: float, status: str = RETURNED) -> dict[str, Any]:
    """The participant gives the place back (``RETURNED``), or Prolific takes it back when the maximum
    allowed time passed (``TIMED-OUT``): the place is free again."""
    row = submission_row(db, submission_id)
    if row["status"] != ACTIVE:
        raise ProlificFault(400, f"A submission that is {row['status']} cannot be {status.lower()}.")
    db.execute("UPDATE submission SET status = ? WHERE id = ?", (status, submission_id))
    settle(db, row["study_id"])
    return submission_view(submission_row(db, submission_id), now)


def time_out_submission(db: sqlite3.Connection, submission_id: str, now: float) -> dict[str, Any]:
    return return_submission(db, submission_id, now, TIMED_OUT)
