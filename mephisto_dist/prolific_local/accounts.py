"""The researcher's account: the user, workspaces and their balance, projects, participant groups,
bonus payments (set up, then paid once) and messages."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from mephisto_dist.prolific_local.faults import invalid, not_found
from mephisto_dist.prolific_local.store import new_id
from mephisto_dist.prolific_local.studies import iso, study_row

USER_ID = "5f0c7b1e2a3d4c5b6a7f8e9d"


def me() -> dict[str, Any]:
    return {"id": USER_ID, "email": "researcher@prolific-local.invalid", "name": "prolific-local researcher",
            "user_type": "researcher", "currency_code": "GBP", "country": "GB"}


def _workspace_view(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "description": row["description"], "owner": USER_ID,
            "users": [{"id": USER_ID, "roles": ["WORKSPACE_ADMIN"]}], "projects": [], "wallet": USER_ID,
            "naivety_distribution_rate": None}


def list_workspaces(db: sqlite3.Connection) -> dict[str, Any]:
    return {"results": [_workspace_view(r) for r in db.execute("SELECT * FROM workspace ORDER BY seq")]}


def workspace(db: sqlite3.Connection, workspace_id: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM workspace WHERE id = ?", (workspace_id,)).fetchone()
    if row is None:
        raise not_found("Workspace", workspace_id)
    return _workspace_view(row)


def create_workspace(db: sqlite3.Connection, data: dict[str, Any], now: float) -> dict[str, Any]:
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise invalid("title", "This field is required.")
    workspace_id = new_id()
    db.execute("INSERT INTO workspace (id, title, description, created) VALUES (?, ?, ?, ?)",
               (workspace_id, title, str(data.get("description") or ""), now))
    return workspace(db, workspace_id)


def update_workspace(db: sqlite3.Connection, workspace_id: str, data: dict[str, Any]) -> dict[str, Any]:
    workspace(db, workspace_id)
    if "title" in data and (not isinstance(data["title"], str) or not data["title"].strip()):
        raise invalid("title", "This field may not be blank.")
    for field in ("title", "description"):
        if field in data:
            db.execute(f"UPDATE workspace SET {field} = ? WHERE id = ?", (str(data[field] or ""), workspace_id))
    return workspace(db, workspace_id)


def balance(db: sqlite3.Connection, workspace_id: str) -> dict[str, Any]:
    workspace(db, workspace_id)
    cents = int(db.execute("SELECT value FROM account WHERE key = 'balance_cents'").fetchone()[0])
    return {"currency_code": "GBP", "total_balance": cents, "available_balance": cents,
            "balance_breakdown": {"rewards": cents, "fees": 0, "vat": 0},
            "available_balance_breakdown": {"rewards": cents, "fees": 0, "vat": 0}}


def _project_view(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "description": row["description"], "owner": USER_ID,
            "workspace": row["workspace_id"], "users": [{"id": USER_ID, "roles": ["PROJECT_EDITOR"]}],
            "naivety_distribution_rate": None}


def list_projects(db: sqlite3.Connection, workspace_id: str) -> dict[str, Any]:
    workspace(db, workspace_id)
    rows = db.execute("SELECT * FROM project WHERE workspace_id = ? ORDER BY seq", (workspace_id,))
    return {"results": [_project_view(r) for r in rows]}


def project(db: sqlite3.Connection, workspace_id: str, project_id: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM project WHERE id = ? AND workspace_id = ?", (project_id, workspace_id)).fetchone()
    if row is None:
        raise not_found("Project", project_id)
    return _project_view(row)


def create_project(db: sqlite3.Connection, workspace_id: str, data: dict[str, Any], now: float) -> dict[str, Any]:
    workspace(db, workspace_id)
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise invalid("title", "This field is required.")
    project_id = new_id()
    db.execute("INSERT INTO project (id, workspace_id, title, description, created) VALUES (?, ?, ?, ?, ?)",
               (project_id, workspace_id, title, str(data.get("description") or ""), now))
    return project(db, workspace_id, project_id)


# -- invitations ------------------------------------------------------------------------------------------

INVITATION_ROLES = ("WORKSPACE_ADMIN", "WORKSPACE_COLLABORATOR")
_EMAIL = re.compile(r"^\S+@\S+\.\S+$")


def invite(db: sqlite3.Connection, data: dict[str, Any], now: float) -> dict[str, Any]:
    """``POST invitations/``: invite people by email to a workspace (``association``) with a ``role``, as
    Mephisto's ``initialize_project`` script does for a research group's collaborators. Nobody is emailed
    here; each invitation is kept and answered as Prolific lists it (invitee, role, who invited, status
    ``INVITED``, a link)."""
    association = data.get("association")
    if not isinstance(association, str) or not association:
        raise invalid("association", "This field is required.")
    if db.execute("SELECT 1 FROM workspace WHERE id = ?", (association,)).fetchone() is None:
        raise invalid("association", f"Workspace {association} was not found.")
    emails = data.get("emails")
    if not isinstance(emails, list) or not emails:
        raise invalid("emails", "A list of one or more email addresses is required.")
    wrong = [e for e in emails if not isinstance(e, str) or not _EMAIL.match(e)]
    if wrong:
        raise invalid("emails", f"Enter valid email addresses: {', '.join(map(str, wrong))}.")
    role = data.get("role") or "WORKSPACE_COLLABORATOR"
    if role not in INVITATION_ROLES:
        raise invalid("role", f'"{role}" is not a valid choice.')
    made = []
    for email in emails:
        invitation_id = new_id()
        db.execute("INSERT INTO invitation (id, workspace_id, email, role, created) VALUES (?, ?, ?, ?, ?)",
                   (invitation_id, association, email, role, now))
        made.append({"association": association, "invitee": {"id": None, "email": email}, "invited_by": USER_ID,
                     "role": role, "status": "INVITED",
                     "invite_link": f"https://app.prolific.com/researcher/invitations/{invitation_id}"})
    return {"invitations": made}


# -- participant groups -----------------------------------------------------------------------------------


def _group_row(db: sqlite3.Connection, group_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT * FROM participant_group WHERE id = ?", (group_id,)).fetchone()
    if row is None:
        raise not_found("Participant group", group_id)
    return row


def _group_view(db: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    count = db.execute("SELECT COUNT(*) FROM group_member WHERE group_id = ?", (row["id"],)).fetchone()[0]
    # Deletion is soft on Prolific and its answer does not say so: a deleted group still looks active.
    return {"id": row["id"], "name": row["name"], "description": row["description"], "project_id": row["project_id"],
            "workspace_id": row["workspace_id"], "is_active": True, "participant_count": int(count)}


def list_groups(db: sqlite3.Connection, project_id: str | None) -> dict[str, Any]:
    query, params = "SELECT * FROM participant_group WHERE deleted = 0", tuple[str, ...]()
    if project_id:
        query, params = query + " AND project_id = ?", (project_id,)
    return {"results": [_group_view(db, r) for r in db.execute(query + " ORDER BY seq", params)]}


def create_group(db: sqlite3.Connection, data: dict[str, Any], now: float) -> dict[str, Any]:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("name", "This field is required.")
    if not data.get("project_id") and not data.get("workspace_id"):
        raise invalid("workspace_id", "A participant group needs a workspace_id or a project_id.")
    group_id = new_id()
    db.execute("INSERT INTO participant_group (id, project_id, workspace_id, name, description, created) "
               "VALUES (?, ?, ?, ?, ?, ?)", (group_id, data.get("project_id"), data.get("workspace_id"), name,
                                             str(data.get("description") or ""), now))
    for participant in data.get("participant_ids") or []:
        db.execute("INSERT OR IGNORE INTO group_member VALUES (?, ?, ?)", (group_id, str(participant), now))
    return _group_view(db, _group_row(db, group_id))


def group(db: sqlite3.Connection, group_id: str) -> dict[str, Any]:
    return _group_view(db, _group_row(db, group_id))


def delete_group(db: sqlite3.Connection, group_id: str) -> None:
    _group_row(db, group_id)
    db.execute("UPDATE participant_group SET deleted = 1 WHERE id = ?", (group_id,))


def members(db: sqlite3.Connection, group_id: str) -> dict[str, Any]:
    _group_row(db, group_id)
    rows = db.execute("SELECT participant_id, added FROM group_member WHERE group_id = ? ORDER BY added, "
                      "participant_id", (group_id,))
    return {"results": [{"participant_id": r["participant_id"], "datetime_created": iso(r["added"])} for r in rows]}


def change_members(db: sqlite3.Connection, group_id: str, data: dict[str, Any], now: float, *,
                   add: bool) -> dict[str, Any]:
    _group_row(db, group_id)
    ids = data.get("participant_ids")
    if not isinstance(ids, list) or not all(isinstance(p, str) and p for p in ids):
        raise invalid("participant_ids", "A list of participant ids is required.")
    for participant in ids:
        if add:
            db.execute("INSERT OR IGNORE INTO group_member VALUES (?, ?, ?)", (group_id, participant, now))
        else:
            db.execute("DELETE FROM group_member WHERE group_id = ? AND participant_id = ?", (group_id, participant))
    return members(db, group_id)


# -- bonuses and messages --------------------------------------------------------------------------------


def set_up_bonuses(db: sqlite3.Connection, data: dict[str, Any]) -> dict[str, Any]:
    study_id = str(data.get("study_id") or "")
    study_row(db, study_id)
    rows: list[tuple[str, int]] = []
    for number, line in enumerate(str(data.get("csv_bonuses") or "").strip().splitlines(), start=1):
        who, _, amount = line.partition(",")
        try:
            cents = int((Decimal(amount.strip()) * 100).to_integral_value())
        except InvalidOperation:
            raise invalid("csv_bonuses", f"Line {number}: {amount.strip()!r} is not an amount.") from None
        if cents <= 0:
            raise invalid("csv_bonuses", f"Line {number}: a bonus must be more than 0.")
        taken = db.execute("SELECT 1 FROM submission WHERE study_id = ? AND (participant_id = ? OR id = ?)",
                           (study_id, who.strip(), who.strip())).fetchone()
        if taken is None:
            raise invalid("csv_bonuses", f"Line {number}: {who.strip()} has no submission in this study.")
        rows.append((who.strip(), cents))
    if not rows:
        raise invalid("csv_bonuses", "At least one bonus is required.")
    bonus_id = new_id()
    total = sum(cents for _, cents in rows)
    db.execute("INSERT INTO bulk_bonus (id, study_id, rows, amount_cents) VALUES (?, ?, ?, ?)",
               (bonus_id, study_id, json.dumps(rows), total))
    return {"id": bonus_id, "study": study_id, "amount": total, "fees": 0, "vat": 0, "total_amount": total}


def pay_bonuses(db: sqlite3.Connection, bonus_id: str, now: float) -> dict[str, Any]:
    """Pay a bulk bonus. Prolific warns that this call is not idempotent: paying the same bulk bonus again
    pays its participants again, and so it does here."""
    row = db.execute("SELECT * FROM bulk_bonus WHERE id = ?", (bonus_id,)).fetchone()
    if row is None:
        raise not_found("Bulk bonus payment", bonus_id)
    for who, cents in json.loads(row["rows"]):
        held = db.execute("SELECT id, bonus_payments FROM submission WHERE study_id = ? AND (participant_id = ? "
                          "OR id = ?) ORDER BY seq DESC", (row["study_id"], who, who)).fetchone()
        db.execute("UPDATE submission SET bonus_payments = ? WHERE id = ?",
                   (json.dumps([*json.loads(held["bonus_payments"]), cents]), held["id"]))
    db.execute("UPDATE bulk_bonus SET paid = COALESCE(paid, ?) WHERE id = ?", (now, bonus_id))
    db.execute("INSERT INTO bonus_payment (bulk_id, paid) VALUES (?, ?)", (bonus_id, now))
    db.execute("UPDATE account SET value = CAST(value AS INTEGER) - ? WHERE key = 'balance_cents'",
               (row["amount_cents"],))
    return {"message": "The bonus payments are being processed."}


def send_message(db: sqlite3.Connection, data: dict[str, Any], now: float) -> dict[str, Any]:
    """A message to a participant, about a study (Prolific requires the study)."""
    recipient, body, study_id = data.get("recipient_id"), data.get("body"), data.get("study_id")
    if not isinstance(recipient, str) or not recipient:
        raise invalid("recipient_id", "This field is required.")
    if not isinstance(body, str) or not body.strip():
        raise invalid("body", "This field is required.")
    if not isinstance(study_id, str) or not study_id:
        raise invalid("study_id", "This field is required.")
    study_row(db, study_id)
    message_id = new_id()
    db.execute("INSERT INTO message (id, recipient_id, study_id, body, sent) VALUES (?, ?, ?, ?, ?)",
               (message_id, recipient, data.get("study_id"), body, now))
    return {"id": message_id, "sender_id": USER_ID, "recipient_id": recipient, "study_id": data.get("study_id"),
            "body": body, "sent_at": iso(now)}


def _message_view(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "sender_id": USER_ID, "recipient_id": row["recipient_id"], "study_id": row["study_id"],
            "body": row["body"], "sent_at": iso(row["sent"]), "channel_id": None, "type": "message"}


def list_messages(db: sqlite3.Connection, user_id: str | None, created_after: str | None) -> dict[str, Any]:
    """The messages with one user (``user_id``), or with everyone since ``created_after`` (ISO 8601):
    Prolific wants one of the two."""
    if user_id:
        rows = db.execute("SELECT * FROM message WHERE recipient_id = ? ORDER BY seq", (user_id,))
    elif created_after:
        try:
            since = datetime.fromisoformat(created_after)
        except ValueError:
            raise invalid("created_after", "Enter a valid date/time.") from None
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        rows = db.execute("SELECT * FROM message WHERE sent > ? ORDER BY seq", (since.timestamp(),))
    else:
        raise invalid("user_id", "Either user_id or created_after is required.")
    return {"results": [_message_view(r) for r in rows]}


def unread_messages() -> dict[str, Any]:
    """Messages sent to the researcher and not read: prolific-local's participants never write."""
    return {"results": []}
