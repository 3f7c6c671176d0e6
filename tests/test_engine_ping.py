"""Pooled PostgreSQL connections: one idle in the pool is pinged before use (and replaced when its
server side is gone); one used a moment ago is trusted, with no extra round trip on the hot path. The same
for the connections a thread holds from one transaction to the next (the web's hot path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError

from mephisto_dist.db import engine as engine_module
from mephisto_dist.db.engine import (
    holding_connections,
    make_engine,
    make_sessionmaker,
    single_statement,
    transaction,
)
from mephisto_dist.errors import ServiceError


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pg_url: str, pid: int) -> None:
    admin = make_engine(pg_url)
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            connection.commit()
    finally:
        admin.dispose()


def test_an_idle_connection_whose_backend_died_is_replaced_before_use(
        pg_engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = _backend_pid(pg_engine)
    _terminate(pg_url, pid)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # the pooled connection counts as idle
    assert _backend_pid(pg_engine) != pid  # pinged, found dead, connected afresh: the caller saw nothing


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_engine: Engine) -> None:
    _backend_pid(pg_engine)  # connected, used, back in the pool
    statements: list[str] = []
    event.listen(pg_engine, "checkout", lambda *_: statements.append("checkout"))
    original = pg_engine.dialect.do_ping
    pings: list[int] = []

    def counting_ping(dbapi_connection: object) -> bool:
        pings.append(1)
        return bool(original(dbapi_connection))

    pg_engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    for _ in range(5):
        _backend_pid(pg_engine)
    assert statements == ["checkout"] * 5
    assert pings == []


# -- a thread holding its connections (db.engine.holding_connections: the web's hot-path threads) ---------


def _checkouts(engine: Engine) -> list[int]:
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(1))
    return checkouts


def test_a_thread_holding_connections_runs_transaction_after_transaction_on_one(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    checkouts = _checkouts(pg_engine)
    with holding_connections():
        pids = set()
        for _ in range(5):
            with transaction(factory) as session:
                pids.add(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert len(pids) == 1
        assert checkouts == [1]
        assert pg_engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert pg_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_each_transaction_of_a_holding_thread_commits_or_rolls_back_as_any(pg_engine: Engine) -> None:
    factory = make_sessionmaker(pg_engine)
    table = f"held_{uuid.uuid4().hex[:12]}"
    with pg_engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (x INTEGER)"))
    try:
        with holding_connections():
            with transaction(factory) as session:
                session.execute(text(f"INSERT INTO {table} VALUES (1)"))
            with pytest.raises(RuntimeError), transaction(factory) as session:
                session.execute(text(f"INSERT INTO {table} VALUES (2)"))
                raise RuntimeError("refused")
            with transaction(factory) as session:
                session.execute(text(f"INSERT INTO {table} VALUES (3)"))
                # A transaction inside another gets a connection of its own, committed by itself.
                with transaction(factory) as inner:
                    inner.execute(text(f"INSERT INTO {table} VALUES (4)"))
                with pg_engine.connect() as connection:
                    assert sorted(connection.execute(text(f"SELECT x FROM {table}")).scalars()) == [1, 4]
            with pg_engine.connect() as connection:  # another connection sees what each committed
                assert sorted(connection.execute(text(f"SELECT x FROM {table}")).scalars()) == [1, 3, 4]
    finally:
        with pg_engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))


def test_a_held_connection_that_failed_goes_back_to_the_pool(pg_engine: Engine, pg_url: str) -> None:
    factory = make_sessionmaker(pg_engine)
    with holding_connections():
        with transaction(factory) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        _terminate(pg_url, pid)
        with pytest.raises(ServiceError), transaction(factory) as session:
            session.execute(text("SELECT 1"))  # its server side is gone (within the ping's idle time)
        with transaction(factory) as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_held_connection_idle_whose_backend_died_is_replaced_before_use(
        pg_engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    factory = make_sessionmaker(pg_engine)
    with holding_connections():
        with transaction(factory) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        _terminate(pg_url, pid)
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # the held connection counts as idle
        with transaction(factory) as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid  # the caller saw nothing


def test_a_single_statement_of_a_holding_thread_runs_on_its_connection_and_commits_by_itself(
        pg_engine: Engine) -> None:
    """``single_statement`` on the held connection, in the driver's autocommit for that statement only:
    no checkout, its write visible at once, and the transactions after it are transactions again (one that
    fails rolls back); a statement that fails gives the connection up, as a failed transaction does."""
    factory = make_sessionmaker(pg_engine)
    table = f"single_{uuid.uuid4().hex[:12]}"
    with pg_engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (x INTEGER PRIMARY KEY)"))

    def stored() -> list[int]:
        with pg_engine.connect() as connection:
            return sorted(connection.execute(text(f"SELECT x FROM {table}")).scalars())

    try:
        with holding_connections():
            with transaction(factory) as session:
                pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with single_statement(factory) as connection:
                assert pg_engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the held one only
                connection.execute(text(f"INSERT INTO {table} VALUES (1)"))
                assert stored() == [1]  # committed by itself, before the block ends
                assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
            with pytest.raises(RuntimeError), transaction(factory) as session:
                session.execute(text(f"INSERT INTO {table} VALUES (2)"))
                raise RuntimeError("refused")
            assert stored() == [1]  # a transaction again: rolled back
            with pytest.raises(IntegrityError), single_statement(factory) as connection:
                connection.execute(text(f"INSERT INTO {table} VALUES (1)"))  # a duplicate key
            with transaction(factory) as session:
                session.execute(text(f"INSERT INTO {table} VALUES (3)"))
                assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid  # given up
            assert stored() == [1, 3]
    finally:
        with pg_engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))
