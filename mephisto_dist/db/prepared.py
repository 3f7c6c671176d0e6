"""The hot path's statements, compiled once per dialect and run straight on the driver's cursor.

A worker's unit costs a handful of statements (the worker, a launched unit, the agent, the unit's two
compare-and-sets, the run's "anything left?"). Through ``Connection.execute`` each paid SQLAlchemy's
per-execution work on top of the driver's: the statement cache lookup, building the parameters, an
execution context, a result object with its metadata (17 us a statement on SQLite, 34 us on PostgreSQL,
measured on this machine; more than SQLite takes to run most of them).

A :class:`Prepared` is a Core statement like any other: SQLAlchemy compiles it (the same SQL text, the
same bind casts) and its types convert the values both ways (the same JSON and datetime processors), so
what is stored and what is read are what ``Connection.execute`` stores and reads (``tests/test_prepared.py``
compares the two on SQLite and PostgreSQL). What is skipped is only the per-execution wrapping. The
statement runs in the caller's transaction, on the connection the session holds. A driver error goes
through SQLAlchemy's own handling (the same exception classes, a dropped connection invalidated as
``Connection.execute`` would), and ``before_cursor_execute`` listeners still hear each statement.

What a statement may hold: bound parameters (named with ``bindparam``, or literals); no ``IN`` list
expanded per execution (write ``a == x OR a == y`` instead), no column left to a Python-side default, no
parameter computed per execution: each is refused when the statement is first compiled.

It reads a few of SQLAlchemy's internals where it does what ``Connection.execute`` does: the compiled
statement's bind processors and result columns, a type's cached result processor, the connection's
``_handle_dbapi_exception`` and its listener flags. The lock pins SQLAlchemy's version, and
``tests/test_prepared.py`` fails if one of them changes meaning.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Ran:
    """What a statement returned: its rows (named tuples: ``row.unit_id``, ``row[0]``) and ``rowcount``."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def all(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class _Plan:
    """A statement as one dialect runs it: its SQL text, how to build its driver parameters, and how to
    read its rows (made on the first execution, when the driver has described them)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("a prepared statement cannot hold an IN list expanded per execution: "
                             f"{compiled.string}")
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Python-side column defaults are computed by SQLAlchemy's execution context, skipped here.
            raise ValueError(f"a prepared statement cannot rely on Python-side column defaults: {compiled.string}")
        self.sql = compiled.string
        processors = compiled._bind_processors  # what Connection.execute applies, built by SQLAlchemy
        by_name = {name: bindparam for bindparam, name in compiled.bind_names.items()}
        order: Sequence[str] = (compiled.positiontup or []) if compiled.positional else list(by_name)
        self.positional = bool(compiled.positional)
        escaped: Mapping[str, str] = compiled.escaped_bind_names or {}
        # Per parameter, in the order the driver takes them: the name the driver gets, the key of the
        # caller's value, whether one is required, the value otherwise (a literal's, processed once), and
        # the processor of a caller's value.
        self.binds: list[tuple[str, str, bool, Any, Callable[[Any], Any] | None]] = []
        for name in order:
            bindparam = by_name[name]
            if bindparam.callable is not None:
                raise ValueError(f"a prepared statement cannot hold a parameter computed per execution: {name}")
            processor = processors.get(name)
            processor = processor if callable(processor) else None
            fixed = None if bindparam.required else \
                (bindparam.value if processor is None else processor(bindparam.value))
            self.binds.append((escaped.get(name, name), bindparam.key, bindparam.required, fixed, processor))
        self.result_types = [entry[3] for entry in compiled._result_columns]
        self.result_keys = [entry[0] for entry in compiled._result_columns]
        self.row: Callable[..., Any] | None = None
        self.readers: list[tuple[int, Callable[[Any], Any]]] = []

    def arguments(self, params: Mapping[str, Any]) -> Any:
        """The driver's parameters, as ``Connection.execute`` builds them (a literal's own value, a missing
        value refused, each value through its type's processor)."""
        values = []
        for _name, key, required, fixed, processor in self.binds:
            if key in params:
                value = params[key]
                values.append(value if processor is None else processor(value))
            elif required:
                raise KeyError(f"a value is required for the parameter {key!r}")
            else:
                values.append(fixed)
        if self.positional:
            return tuple(values)
        return {bind[0]: value for bind, value in zip(self.binds, values, strict=True)}

    def describe(self, description: Sequence[Any], dialect: Dialect) -> None:
        """Row type and value readers, from the driver's description of the first result. Two threads
        may both describe: each assigns whole values, the readers before the row type that says they
        are there."""
        keys = self.result_keys if len(self.result_keys) == len(description) else [d[0] for d in description]
        readers: list[tuple[int, Callable[[Any], Any]]] = []
        if len(self.result_types) == len(description):
            for index, (type_, column) in enumerate(zip(self.result_types, description, strict=True)):
                reader = type_._cached_result_processor(dialect, column[1])
                if reader is not None:
                    readers.append((index, reader))
        self.readers = readers
        self.row = namedtuple("Row", keys, rename=True)  # type: ignore[misc]


    def ran(self, raw: Sequence[Any], description: Sequence[Any] | None, rowcount: int, dialect: Dialect) -> Ran:
        """What the driver returned (its rows, its description, its row count) as :class:`Ran`, each value
        through its type's result processor."""
        if description is None:
            return Ran([], rowcount)
        if self.row is None:
            self.describe(description, dialect)
        row = self.row
        assert row is not None
        readers = self.readers
        if not readers:
            return Ran([row(*values) for values in raw], rowcount)
        rows = []
        for values in raw:
            converted = list(values)
            for index, reader in readers:
                converted[index] = reader(converted[index])
            rows.append(row(*converted))
        return Ran(rows, rowcount)


class Prepared:
    """A Core statement run by :meth:`execute` past ``Connection.execute`` (see the module docstring)."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: weakref.WeakKeyDictionary[Dialect, _Plan] = weakref.WeakKeyDictionary()

    def plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect)
        if plan is None:
            plan = self._plans[dialect] = _Plan(self.statement, dialect)
        return plan

    def execute(self, connection: Connection, params: Mapping[str, Any] | None = None, *,
                begin: bool = True) -> Ran:
        """Run the statement in ``connection``'s transaction (begun if it was not, unless ``begin`` is
        false: the statement that begins it) with ``params`` keyed by the statement's parameter names."""
        dialect = connection.dialect
        plan = self.plan(dialect)
        arguments = plan.arguments(params or {})
        if begin and not connection.in_transaction():
            connection.begin()
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            # SQLAlchemy's own test for listeners (its flags: the dispatch lookup costs more than a statement),
            # then whether any listens to this event (SQLite's engine has one for "begin", none for this).
            if (connection._has_events or connection.engine._has_events) and connection.dispatch.before_cursor_execute:
                connection.dispatch.before_cursor_execute(connection, cursor, plan.sql, arguments, None, False)
            cursor.execute(plan.sql, arguments)
            description = cursor.description
            raw = cursor.fetchall() if description else []
            rowcount = cursor.rowcount
        except Exception as error:
            if isinstance(error, dialect.loaded_dbapi.Error):
                # SQLAlchemy's own handling: its exception classes, a lost connection invalidated (and the
                # pool's older connections with it), the handle_error listeners told.
                connection._handle_dbapi_exception(error, plan.sql, arguments, cursor, None)
            raise
        finally:
            cursor.close()
        return plan.ran(raw, description, rowcount, dialect)


_PREPARED: dict[int, Prepared] = {}


def prepared(statement: ClauseElement) -> Prepared:
    """The :class:`Prepared` of a statement built once (a module's constant, an ``lru_cache``'d builder's
    result): one per statement object for the process's life, which keeps the statement alive, so its
    id names it."""
    found = _PREPARED.get(id(statement))
    if found is None:
        found = _PREPARED[id(statement)] = Prepared(statement)
    return found


def run(connection: Connection, statement: ClauseElement, params: Mapping[str, Any] | None = None) -> Ran:
    """Run a statement built once (see :func:`prepared`) in ``connection``'s transaction."""
    return prepared(statement).execute(connection, params)
