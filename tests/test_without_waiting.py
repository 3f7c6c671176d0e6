"""``db.engine.without_waiting``: work on SQLite that begins only when nothing else writes this instant.
Another connection holding SQLite's write lock (as another process would: SQLite locks per connection)
or another thread of the process writing makes the block give way at once, before anything is written;
later transactions of the block, and every connection given back to the pool, wait as usual."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    WriterBusy,
    holding_connections,
    make_engine,
    make_sessionmaker,
    pause,
    transaction,
    without_waiting,
)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Path, sessionmaker[Session]]]:
    path = tmp_path / "test.db"
    engine = make_engine(f"sqlite:///{path}")
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    yield path, factory
    engine.dispose()


def rows(factory: sessionmaker[Session]) -> list[int]:
    with transaction(factory) as session:
        return [int(x) for x in session.scalars(text("SELECT x FROM t ORDER BY x"))]


def busy_timeout(session: Session) -> int:
    return int(session.execute(text("PRAGMA busy_timeout")).scalar_one())


def test_another_connections_write_lock_makes_the_block_give_way_at_once(
        database: tuple[Path, sessionmaker[Session]]) -> None:
    path, factory = database
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(WriterBusy, match="locked"), without_waiting(factory), transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        assert time.monotonic() - started < 1.0  # SQLite's busy wait would have been 30 s
    finally:
        other.execute("COMMIT")
    assert rows(factory) == []
    # The same work goes through once the lock is free.
    with without_waiting(factory), transaction(factory) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    assert rows(factory) == [1]


def test_another_thread_writing_makes_the_block_give_way_before_it_begins(
        database: tuple[Path, sessionmaker[Session]]) -> None:
    _, factory = database
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            writing.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        with pytest.raises(WriterBusy, match="another thread"), without_waiting(factory):
            pytest.fail("the block ran while another thread of the process was writing")
    finally:
        done.set()
        thread.join(10)
    assert rows(factory) == [1]


def test_the_blocks_later_transactions_wait_for_a_writer_as_usual(
        database: tuple[Path, sessionmaker[Session]]) -> None:
    path, factory = database
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    with holding_connections(), without_waiting(factory):
        with transaction(factory) as session:
            assert busy_timeout(session) == 0  # the first: no busy wait
            session.execute(text("INSERT INTO t VALUES (1)"))
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
        started = time.monotonic()
        with transaction(factory) as session:  # waits for the other writer, then writes
            assert busy_timeout(session) == SQLITE_BUSY_TIMEOUT_MS
            session.execute(text("INSERT INTO t VALUES (2)"))
        assert time.monotonic() - started >= 0.2
    assert rows(factory) == [1, 2]


def test_a_connection_leaves_the_block_with_the_usual_busy_wait(
        database: tuple[Path, sessionmaker[Session]]) -> None:
    _, factory = database
    with holding_connections():
        with without_waiting(factory), transaction(factory) as session:
            assert busy_timeout(session) == 0
        # The thread's held connection, outside a block: the usual wait before its BEGIN.
        with transaction(factory) as session:
            assert busy_timeout(session) == SQLITE_BUSY_TIMEOUT_MS
        with without_waiting(factory), transaction(factory) as session:
            assert busy_timeout(session) == 0
    # Given back to the pool at the end of holding: whoever checks it out next waits as usual.
    with factory() as session:
        assert busy_timeout(session) == SQLITE_BUSY_TIMEOUT_MS
    # A block on a pooled connection that gave way: back in the pool with the usual wait too.
    path = Path(str(factory.kw["bind"].url.database))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(WriterBusy), without_waiting(factory), transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        other.execute("COMMIT")
    with factory() as session:
        assert busy_timeout(session) == SQLITE_BUSY_TIMEOUT_MS


def test_a_pause_in_the_block_gives_way_and_sleeps_outside_it(database: tuple[Path, sessionmaker[Session]]) -> None:
    _, factory = database
    with pytest.raises(WriterBusy), without_waiting(factory):
        pause(5)
    started = time.monotonic()
    pause(0.01)
    assert time.monotonic() - started >= 0.01


def test_it_is_for_sqlite_only(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with pytest.raises(ValueError, match="SQLite"), without_waiting(make_sessionmaker(engine)):
            pass
    finally:
        engine.dispose()


def test_the_web_runs_a_plain_runs_call_on_its_loop_and_leaves_a_writer_to_a_hot_thread(tmp_path: Path) -> None:
    """``WebContext.call`` on SQLite: a run whose calls touch nothing but the database runs them on the
    event loop's thread; one that meets another connection's write goes to a hot thread, which waits for
    it; a capped run's calls always go to the hot threads."""
    import asyncio

    from mephisto_dist.web.context import WebContext
    from mephisto_dist.work.served import Served
    from tests.factories import make_run
    from tests.system import make_runtime

    path = tmp_path / "test.db"
    runtime = make_runtime(tmp_path / "data", f"sqlite:///{path}", "redis://127.0.0.1:1/0")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        plain, capped = make_run(runtime.sessions), make_run(runtime.sessions, max_concurrent_units=5)

        def where() -> str:
            with transaction(runtime.sessions) as session:
                session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            return threading.current_thread().name

        async def go(run_id: int) -> tuple[str, ...]:
            context = WebContext(Served.for_runtime(runtime, run_id=run_id), hot_threads=2, on_loop_when_free=True)
            context.served.run()  # the run read (and judged) before the calls, as the server's warm-up does
            free = await context.call(where)
            other.execute("BEGIN IMMEDIATE")
            threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
            started = time.monotonic()
            busy = await context.call(where)
            assert time.monotonic() - started >= 0.25  # it waited for the writer's commit
            return threading.current_thread().name, free, busy

        loop, free, busy = asyncio.run(go(plain.run_id))
        assert free == loop and busy.startswith("hot-path")
        loop, free, busy = asyncio.run(go(capped.run_id))
        assert free.startswith("hot-path") and busy.startswith("hot-path")
    finally:
        other.close()
        runtime.close()
