"""The SQLite file behind mturk-local: the schema and the connection. One process owns the file; every
request runs in one ``BEGIN IMMEDIATE`` transaction, so a request sees and leaves a consistent state."""

from __future__ import annotations

import secrets
import sqlite3
import string
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path

from mephisto_dist.db.sqlite_file import immediate, open_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS hit_type (
    id TEXT PRIMARY KEY, fingerprint TEXT UNIQUE NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
    keywords TEXT, reward TEXT NOT NULL, assignment_duration_s INTEGER NOT NULL,
    auto_approval_delay_s INTEGER NOT NULL, qualification_requirements TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS hit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, hit_type_id TEXT NOT NULL,
    question TEXT NOT NULL, annotation TEXT, max_assignments INTEGER NOT NULL, created REAL NOT NULL,
    expiration REAL NOT NULL, disposed INTEGER NOT NULL DEFAULT 0, reviewing INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS request_token (
    operation TEXT NOT NULL, token TEXT NOT NULL, result TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (operation, token));
CREATE TABLE IF NOT EXISTS assignment (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, hit_id TEXT NOT NULL,
    worker_id TEXT NOT NULL, status TEXT NOT NULL, accept_time REAL NOT NULL, deadline REAL NOT NULL,
    submit_time REAL, auto_approval_time REAL, approval_time REAL, rejection_time REAL, answer TEXT,
    feedback TEXT);
CREATE INDEX IF NOT EXISTS assignment_hit ON assignment (hit_id, status);
CREATE INDEX IF NOT EXISTS assignment_status ON assignment (status);
CREATE TABLE IF NOT EXISTS bonus (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, worker_id TEXT NOT NULL, assignment_id TEXT NOT NULL,
    hit_id TEXT NOT NULL, amount TEXT NOT NULL, reason TEXT NOT NULL, grant_time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS qualification_type (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    description TEXT NOT NULL, keywords TEXT, status TEXT NOT NULL, retry_delay_s INTEGER,
    auto_granted INTEGER NOT NULL, auto_granted_value INTEGER, created REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS qualification (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, type_id TEXT NOT NULL, worker_id TEXT NOT NULL,
    value INTEGER NOT NULL, status TEXT NOT NULL, grant_time REAL NOT NULL, UNIQUE (type_id, worker_id));
CREATE TABLE IF NOT EXISTS worker_block (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, worker_id TEXT UNIQUE NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notification (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, worker_id TEXT NOT NULL, subject TEXT NOT NULL,
    message TEXT NOT NULL, sent REAL NOT NULL);
CREATE TABLE IF NOT EXISTS account (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS call_count (operation TEXT PRIMARY KEY, calls INTEGER NOT NULL);
"""

ID_ALPHABET = string.ascii_uppercase + string.digits
DEFAULT_BALANCE = Decimal("10000.00")


def new_id(length: int = 30) -> str:
    """An id shaped like MTurk's (30 upper-case letters and digits)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


class Store:
    def __init__(self, path: Path | str, *, initial_balance: Decimal = DEFAULT_BALANCE) -> None:
        self.path = str(path)
        self._db = open_file(self.path, SCHEMA)
        hit_columns = {row[1] for row in self._db.execute("PRAGMA table_info(hit)")}
        if "reviewing" not in hit_columns:  # a file made before UpdateHITReviewStatus was served
            self._db.execute("ALTER TABLE hit ADD COLUMN reviewing INTEGER NOT NULL DEFAULT 0")
        self._db.execute("INSERT OR IGNORE INTO account (key, value) VALUES ('balance', ?)",
                         (str(initial_balance),))

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    def close(self) -> None:
        self._db.close()
