"""Rows with a unique key, created once however many processes try at the same moment.

``INSERT ... ON CONFLICT DO NOTHING`` settles the race in the database: the loser inserts nothing and
reads the winner's row. No SAVEPOINT, so it is cheap enough for the hot path (a worker's first visit).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mephisto_dist.db.models import Base


@lru_cache(maxsize=32)
def _statement(dialect: str, table_name: str) -> Insert:
    table = Base.metadata.tables[table_name]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert  # loaded by its engine anyway

        return postgresql_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


@lru_cache(maxsize=32)
def _returning_id(dialect: str, table_name: str) -> Insert:
    return _statement(dialect, table_name).returning(Base.metadata.tables[table_name].c.id)


def insert_returning_id(session: Session, table_name: str, values: Mapping[str, Any]) -> int | None:
    """Insert the row unless one with the same unique key exists; its new id, or ``None`` when it
    existed (one round trip either way)."""
    inserted = session.connection().execute(_returning_id(session.get_bind().dialect.name, table_name),
                                            dict(values)).scalar()
    return None if inserted is None else int(inserted)


def insert_ignoring_conflicts(session: Session, table_name: str, values: Mapping[str, Any]) -> bool:
    """Insert the row unless one with the same unique key exists; ``True`` when this call inserted it."""
    statement = _statement(session.get_bind().dialect.name, table_name)
    return bool(session.connection().execute(statement, dict(values)).rowcount)


def get_or_create(session: Session, model: type[Any], keys: Mapping[str, Any],
                  extra: Mapping[str, Any]) -> tuple[int, bool]:
    """The id of the row with these unique ``keys``, inserting it (with ``extra``) if missing; ``True``
    when this call created it."""
    query = select(model.id).filter_by(**keys)
    found = session.scalar(query)
    if found is not None:
        return int(found), False
    created = insert_ignoring_conflicts(session, model.__tablename__, {**keys, **extra})
    found = session.scalar(query)
    if found is None:
        raise RuntimeError(f"{model.__tablename__} row {dict(keys)} vanished right after it was written")
    return int(found), created
