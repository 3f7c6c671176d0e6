"""The SQLite file behind prolific-local: the schema and the connection. Every request runs in one
``BEGIN IMMEDIATE`` transaction, so a request sees and leaves a consistent state."""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from mephisto_dist.db.sqlite_file import immediate, open_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS workspace (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS project (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, workspace_id TEXT NOT NULL,
    title TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS study (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project_id TEXT, body TEXT NOT NULL,
    status TEXT NOT NULL, processing_until REAL NOT NULL DEFAULT 0, total_available_places INTEGER NOT NULL,
    created REAL NOT NULL, published REAL);
CREATE TABLE IF NOT EXISTS submission (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL, status TEXT NOT NULL, processing_until REAL NOT NULL DEFAULT 0,
    started REAL NOT NULL, completed REAL, entered_code TEXT, bonus_payments TEXT NOT NULL DEFAULT '[]',
    message TEXT, rejection_category TEXT);
CREATE INDEX IF NOT EXISTS submission_study ON submission (study_id, status);
CREATE TABLE IF NOT EXISTS bulk_bonus (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, study_id TEXT NOT NULL,
    rows TEXT NOT NULL, amount_cents INTEGER NOT NULL, paid REAL);
CREATE TABLE IF NOT EXISTS bonus_payment (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, bulk_id TEXT NOT NULL, paid REAL NOT NULL);
CREATE TABLE IF NOT EXISTS participant_group (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, project_id TEXT, workspace_id TEXT,
    name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', deleted INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS group_member (
    group_id TEXT NOT NULL, participant_id TEXT NOT NULL, added REAL NOT NULL,
    PRIMARY KEY (group_id, participant_id));
CREATE TABLE IF NOT EXISTS message (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, recipient_id TEXT NOT NULL,
    study_id TEXT, body TEXT NOT NULL, sent REAL NOT NULL);
CREATE TABLE IF NOT EXISTS invitation (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, workspace_id TEXT NOT NULL,
    email TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS account (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS call_count (endpoint TEXT PRIMARY KEY, calls INTEGER NOT NULL);
"""
DEFAULT_BALANCE_CENTS = 1_000_000


def new_id() -> str:
    """An id shaped like Prolific's (24 hexadecimal digits)."""
    return secrets.token_hex(12)


class Store:
    def __init__(self, path: Path | str, *, initial_balance_cents: int = DEFAULT_BALANCE_CENTS) -> None:
        self.path = str(path)
        self._db = open_file(self.path, SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO account (key, value) VALUES ('balance_cents', ?)",
                         (str(initial_balance_cents),))

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    def close(self) -> None:
        self._db.close()
