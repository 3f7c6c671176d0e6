"""Paying and refusing: approve (also overriding a rejection), reject, bonuses with UniqueRequestToken
deduplication, and the account balance that payments reduce (MTurk's commission is not charged)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

from mephisto_dist.mturk_local import validation as v
from mephisto_dist.mturk_local.faults import RequestFault, invalid, wrong_assignment_state
from mephisto_dist.mturk_local.hits import TOKEN_TTL_S, charge, load_assignment, load_hit
from mephisto_dist.mturk_local.paging import page_of, seq_result

MAX_FEEDBACK_CHARS = 1024


def balance(db: sqlite3.Connection) -> Decimal:
    return Decimal(db.execute("SELECT value FROM account WHERE key = 'balance'").fetchone()[0])


def _reward(db: sqlite3.Connection, hit_id: str) -> Decimal:
    return Decimal(load_hit(db, hit_id)["reward"])


def approve_assignment(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = load_assignment(db, p["AssignmentId"])
    feedback = v.text("RequesterFeedback", p.get("RequesterFeedback"), MAX_FEEDBACK_CHARS)
    if row["status"] == "Rejected" and p.get("OverrideRejection"):
        if load_hit(db, row["hit_id"])["disposed"]:
            raise RequestFault("AWS.MechanicalTurk.InvalidAssignmentState",
                               "The HIT of this assignment was deleted; its rejection can no longer be overridden.")
    elif row["status"] == "Rejected":
        raise RequestFault("AWS.MechanicalTurk.InvalidAssignmentState",
                           "This assignment was rejected; approve it with OverrideRejection set to true.")
    elif row["status"] != "Submitted":
        raise wrong_assignment_state("Submitted")
    reward = _reward(db, row["hit_id"])
    if balance(db) < reward:
        raise _insufficient_funds()
    db.execute("UPDATE assignment SET status = 'Approved', approval_time = ?, feedback = COALESCE(?, feedback)"
               " WHERE id = ?", (now, feedback or None, row["id"]))
    charge(db, reward)
    return {}


def reject_assignment(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = load_assignment(db, p["AssignmentId"])
    feedback = v.text("RequesterFeedback", p["RequesterFeedback"], MAX_FEEDBACK_CHARS, required=True)
    if row["status"] != "Submitted":
        raise wrong_assignment_state("Submitted")
    db.execute("UPDATE assignment SET status = 'Rejected', rejection_time = ?, feedback = ? WHERE id = ?",
               (now, feedback, row["id"]))
    return {}


def send_bonus(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    row = load_assignment(db, p["AssignmentId"])
    if row["worker_id"] != p["WorkerId"]:
        raise invalid("WorkerId", p["WorkerId"], f"Assignment {row['id']} was not done by this worker.")
    if row["status"] not in ("Submitted", "Approved"):
        raise wrong_assignment_state("Submitted", "Approved")
    amount = v.amount("BonusAmount", p["BonusAmount"])
    reason = v.text("Reason", p["Reason"], 4096, required=True)
    token = p.get("UniqueRequestToken")
    if token:
        earlier = db.execute("SELECT result FROM request_token WHERE operation = 'SendBonus' AND token = ?"
                             " AND created > ?", (token, now - TOKEN_TTL_S)).fetchone()
        if earlier is not None:
            raise RequestFault("AWS.MechanicalTurk.DuplicateRequest",
                               f"A bonus was already sent with this UniqueRequestToken (request {earlier[0]}).")
    if balance(db) < amount:
        raise _insufficient_funds()
    cursor = db.execute("INSERT INTO bonus (worker_id, assignment_id, hit_id, amount, reason, grant_time)"
                        " VALUES (?,?,?,?,?,?)", (row["worker_id"], row["id"], row["hit_id"], str(amount), reason, now))
    charge(db, amount)
    if token:
        db.execute("INSERT OR REPLACE INTO request_token (operation, token, result, created)"
                   " VALUES ('SendBonus', ?, ?, ?)", (token, f"bonus-{cursor.lastrowid}", now))
    return {}


def list_bonus_payments(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    if ("HITId" in p) == ("AssignmentId" in p):
        raise invalid("HITId", p.get("HITId"), "Give exactly one of HITId or AssignmentId.")
    column, value = ("hit_id", p["HITId"]) if "HITId" in p else ("assignment_id", p["AssignmentId"])
    if column == "hit_id":
        load_hit(db, value)
    else:
        load_assignment(db, value)
    page = page_of("ListBonusPayments", p)
    rows = db.execute(f"SELECT * FROM bonus WHERE {column} = ? AND seq > ? ORDER BY seq LIMIT ?",
                      (value, page.after_seq, page.size)).fetchall()
    items = [{"WorkerId": r["worker_id"], "BonusAmount": r["amount"], "AssignmentId": r["assignment_id"],
              "Reason": r["reason"], "GrantTime": r["grant_time"]} for r in rows]
    return seq_result(page, "BonusPayments", items, rows)


def get_account_balance(db: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    return {"AvailableBalance": f"{balance(db):.2f}", "OnHoldBalance": "0.00"}


def _insufficient_funds() -> RequestFault:
    return RequestFault("AWS.MechanicalTurk.InsufficientFunds",
                        "This Requester has insufficient funds in their account to complete this transaction.")
