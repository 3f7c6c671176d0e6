"""Rows with a unique key, created once however many processes try at the same moment.

``INSERT ... ON CONFLICT DO NOTHING`` settles the race in the database: the loser inserts nothing and
reads the winner's row. No SAVEPOINT, so it is cheap enough for the hot path (a worker's first visit).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, bindparam, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mephisto_dist.db.models import Base
from mephisto_dist.db.prepared import Prepared


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


@lru_cache(maxsize=64)
def _prepared(dialect: str, table_name: str, columns: tuple[str, ...], returning_id: bool) -> Prepared | None:
    """The insert of exactly ``columns``, for ``db.prepared``; None when the table has a column with a
    Python-side default among the others (SQLAlchemy's execution computes those: it runs such a row)."""
    table = Base.metadata.tables[table_name]
    if any(column.default is not None and column.name not in columns for column in table.c):
        return None
    values = {name: bindparam(name, type_=table.c[name].type) for name in columns}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert  # loaded by its engine anyway

        statement: Insert = postgresql_insert(table).values(values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(table).values(values).on_conflict_do_nothing()
    return Prepared(statement.returning(table.c.id) if returning_id else statement)


def insert_returning_id(session: Session, table_name: str, values: Mapping[str, Any]) -> int | None:
    """Insert the row unless one with the same unique key exists; its new id, or ``None`` when it
    existed (one round trip either way)."""
    connection = session.connection()
    dialect = connection.dialect.name
    prepared = _prepared(dialect, table_name, tuple(sorted(values)), True)
    inserted = (connection.execute(_returning_id(dialect, table_name), dict(values)).scalar() if prepared is None
                else prepared.execute(connection, values).scalar())
    return None if inserted is None else int(inserted)


def insert_ignoring_conflicts(session: Session, table_name: str, values: Mapping[str, Any]) -> bool:
    """Insert the row unless one with the same unique key exists; ``True`` when this call inserted it."""
    connection = session.connection()
    dialect = connection.dialect.name
    prepared = _prepared(dialect, table_name, tuple(sorted(values)), False)
    if prepared is None:
        return bool(connection.execute(_statement(dialect, table_name), dict(values)).rowcount)
    return bool(prepared.execute(connection, values).rowcount)


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
