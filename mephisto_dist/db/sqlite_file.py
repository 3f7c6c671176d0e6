"""A SQLite file for a local stand-in service (``mturk-local``, ``prolific-local``): plain ``sqlite3``
(their state is a few tables, not the product's models), WAL so readers never wait on the writer, and
one ``BEGIN IMMEDIATE`` transaction at a time so a read-then-write is never interleaved."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_file(path: Path | str, schema: str) -> sqlite3.Connection:
    """The connection (autocommit; shared by the service's threads), with ``schema`` created if new."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
