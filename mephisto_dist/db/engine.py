"""Engines and sessions. SQLite (embedded default) runs in WAL mode with a busy timeout and takes the
write lock at BEGIN, so a read-then-write transaction never fails half-way on a stale snapshot;
PostgreSQL is used as it comes."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.prepared import Prepared
from mephisto_dist.errors import ConfigError
from mephisto_dist.errors.drivers import database_error, is_database_driver_error

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "mephisto_dist_read_only"
PING_AFTER_IDLE_S = 5.0
"""A pooled connection idle this long is pinged before use; one used more recently is trusted."""
# How a SQLite transaction begins: read-only, or taking the write lock at once.
_BEGIN_READ = Prepared(text("BEGIN"))
_BEGIN_WRITE = Prepared(text("BEGIN IMMEDIATE"))


_CONFIGURED_URLS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def make_engine(database_url: str) -> Engine:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError(f"database URL {database_url!r} is not a valid SQLAlchemy URL") from None
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(database_url, url.database)
    else:
        if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url, pool_size=10, max_overflow=20)
        _ping_idle_connections(engine)
    _CONFIGURED_URLS[engine] = database_url
    return engine


@contextmanager
def driver_errors(bind: object) -> Iterator[None]:
    """The database driver's failures in the block as our :class:`~mephisto_dist.errors.ServiceError`
    (``Unreachable`` when the connection failed) with the one line ``errors.drivers`` builds, naming the
    URL as configured (password masked). Constraint violations pass unchanged: their writer handles them."""
    try:
        yield
    except SQLAlchemyError as error:
        if not is_database_driver_error(error):
            raise
        raise database_error(error, _configured_url(bind)) from error


def _configured_url(bind: object) -> str | None:
    if not isinstance(bind, Engine):
        return None
    return _CONFIGURED_URLS.get(bind) or bind.url.render_as_string(hide_password=False)


def _ping_idle_connections(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout: a third more round trips on
    the hot path, whose transactions are a few statements each. Only a connection that sat idle in the
    pool is pinged (a server restarted or an idle timeout since it was used). One in use a moment ago is
    trusted; if the server went away since, its statement fails, and SQLAlchemy then invalidates the
    pool, so later checkouts get new connections."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_S:
            return  # new (just connected) or used a moment ago
        _ping(engine, dbapi_connection)  # a DisconnectionError: the pool connects afresh

    _PINGED.add(engine)


_PINGED: weakref.WeakSet[Engine] = weakref.WeakSet()


def _ping(engine: Engine, dbapi_connection: Any) -> None:
    """A round trip on a connection that sat idle: ``DisconnectionError`` when its server side is gone."""
    try:
        engine.dialect.do_ping(dbapi_connection)
    except engine.dialect.loaded_dbapi.Error as error:
        if engine.dialect.is_disconnect(error, dbapi_connection, None):
            raise DisconnectionError(str(error)) from error
        raise


def _sqlite_engine(database_url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the folder of the SQLite database {database}: "
                              f"{error.strerror or error}") from None
    engine = create_engine(database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers take no lock in WAL mode: a read-only transaction must not queue behind writers. Run on
        # the driver's cursor (db.prepared): every hot-path transaction begins here.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        if not read_only and _NO_WAIT.first_begin:
            _begin_without_waiting(connection)
            return
        if connection.info.get(_WAITS_NOT):
            _restore_busy_wait(connection)
        (_BEGIN_READ if read_only else _BEGIN_WRITE).execute(connection, begin=False)

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        # Back to the pool with the busy wait every other user of the connection expects.
        if dbapi_connection is not None and record.info.pop(_WAITS_NOT, False):
            dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

    return engine


class WriterBusy(Exception):
    """SQLite's write lock is held elsewhere this instant, by another process or another thread of this
    one, and the thread asked not to wait for it (:func:`without_waiting`). Nothing was written."""


class _NoWait(threading.local):
    active = False  # in a without_waiting block
    first_begin = False  # ... whose first write transaction has not begun


_NO_WAIT = _NoWait()
_BUSY_NOW = Prepared(text("PRAGMA busy_timeout=0"))
_BUSY_AS_USUAL = Prepared(text(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"))
_WAITS_NOT = "mephisto_dist_busy_timeout_0"
"""In a connection's pool record: its busy timeout is 0. Left so between blocks (one PRAGMA less a call
where blocks follow one another on the same connection); any other BEGIN, and the pool's checkin, set
the usual timeout back first."""


def _begin_without_waiting(connection: Any) -> None:
    """BEGIN IMMEDIATE with no busy wait: :class:`WriterBusy` when another process holds the write lock."""
    import sqlite3

    _NO_WAIT.first_begin = False
    if not connection.info.get(_WAITS_NOT):
        _BUSY_NOW.execute(connection, begin=False)
        connection.info[_WAITS_NOT] = True
    try:
        _BEGIN_WRITE.execute(connection, begin=False)
    except DBAPIError as error:
        code = getattr(error.orig, "sqlite_errorcode", None)
        if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        raise WriterBusy(str(error.orig)) from None


def _restore_busy_wait(connection: Any) -> None:
    _BUSY_AS_USUAL.execute(connection, begin=False)
    connection.info.pop(_WAITS_NOT, None)


@contextmanager
def without_waiting(factory: sessionmaker[Session]) -> Iterator[None]:
    """On this thread, for the block: work on SQLite that never waits for another writer to begin. The
    block holds this process's writer lock throughout (:class:`WriterBusy` at once when another thread
    has it), and its first write transaction begins only if SQLite's write lock is free (else
    :class:`WriterBusy`, before anything was written). Later transactions of the block wait as usual:
    what the first committed stands. :func:`pause` raises :class:`WriterBusy` in the block.

    For a caller that has a better place to wait (the web's event loop hands the work to a thread)."""
    lock = _writer_lock(factory)
    if lock is None:
        raise ValueError("without_waiting is for SQLite")
    if not lock.acquire(blocking=False):
        raise WriterBusy("another thread of this process is writing")
    _NO_WAIT.active = _NO_WAIT.first_begin = True
    try:
        yield
    finally:
        _NO_WAIT.active = _NO_WAIT.first_begin = False
        lock.release()


def pause(seconds: float) -> None:
    """``time.sleep``, outside any transaction, before trying again; in a :func:`without_waiting` block,
    :class:`WriterBusy` instead: the caller makes its work again from the start where waiting is fine
    (what the block committed before stands, as when a retry follows an outage)."""
    if _NO_WAIT.active:
        raise WriterBusy("a retry would wait")
    time.sleep(seconds)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_SQLITE_WRITERS_GUARD = threading.Lock()


def _writer_lock(factory: sessionmaker[Session]) -> threading.RLock | None:
    """SQLite has one writer at a time. Threads of one process queue on a lock rather than in SQLite's
    busy handler, which sleeps and retries and so turns contention into latency; other processes
    still wait in the busy handler."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine) or bind.dialect.name != "sqlite":
        return None
    with _SQLITE_WRITERS_GUARD:
        lock = _SQLITE_WRITERS.get(bind)
        if lock is None:
            lock = _SQLITE_WRITERS[bind] = threading.RLock()
        return lock


class _Held(threading.local):
    """This thread's connections held between transactions (:func:`holding_connections`), by engine,
    with when each last ended a transaction; ``None`` on a thread that holds none."""

    connections: dict[Engine, tuple[Connection, float]] | None = None


_HELD = _Held()


@contextmanager
def holding_connections() -> Iterator[None]:
    """On this thread, until the block ends, :func:`transaction` runs on a connection it keeps from one
    transaction to the next, rather than one checked out of the engine's pool and returned each time.

    For a thread that runs transaction after transaction (the web's hot path: two a unit): checkout and
    checkin with their events, and the ``Connection`` made around each checkout, were a tenth of the
    service functions' CPU. What the pool's checkout did is kept: a held connection idle for more than
    ``PING_AFTER_IDLE_S`` is pinged first where the engine's pool pings (PostgreSQL) and replaced when
    its server side is gone; a transaction that failed gives its connection back to the pool (a lost one
    was invalidated by SQLAlchemy), and so does the block's end."""
    if _HELD.connections is not None:
        yield  # already holding: the outer block gives them back
        return
    _HELD.connections = {}
    try:
        yield
    finally:
        held, _HELD.connections = _HELD.connections, None
        for connection, _ in held.values():
            connection.close()


def _held_connection(bind: object) -> Connection | None:
    """This thread's connection to ``bind`` for a transaction, when the thread holds connections (checked
    out now if it has none, or if the one held idled long enough to be pinged); ``None`` otherwise."""
    held = _HELD.connections
    if held is None or not isinstance(bind, Engine):
        return None
    found = held.get(bind)
    if found is not None:
        connection, ended_at = found
        if connection.in_transaction():
            return None  # a transaction inside another: its own connection, as without holding
        if time.monotonic() - ended_at < PING_AFTER_IDLE_S or bind not in _PINGED:
            return connection
        try:
            _ping(bind, connection.connection.dbapi_connection)
            return connection
        except DisconnectionError:
            del held[bind]
            connection.invalidate()  # its server side is gone: the pool connects afresh below
            connection.close()
    connection = bind.connect()
    held[bind] = (connection, time.monotonic())
    return connection


def _give_back_held(bind: object, *, failed: bool) -> None:
    held = _HELD.connections
    if held is None or not isinstance(bind, Engine) or bind not in held:
        return
    if failed:
        connection, _ = held.pop(bind)
        connection.close()
    else:
        held[bind] = (held[bind][0], time.monotonic())


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """The one place that commits: the block's work commits on exit or rolls back on error."""
    bind = factory.kw.get("bind")
    lock = _writer_lock(factory)
    if lock is not None:
        lock.acquire()
    held: Connection | None = None
    session: Session | None = None
    failed = True
    try:
        with driver_errors(bind):
            held = _held_connection(bind)
            session = factory() if held is None else factory(bind=held)
            try:
                yield session
                session.commit()
                failed = False
            except BaseException:
                session.rollback()
                raise
    finally:
        if session is not None:
            session.close()
        if held is not None:
            _give_back_held(bind, failed=failed)
        if lock is not None:
            lock.release()


@contextmanager
def single_statement(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A connection for one write statement, atomic by itself. On PostgreSQL it runs in autocommit:
    no BEGIN and COMMIT round trips around it. SQLite takes its write lock as :func:`transaction` does."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine) or bind.dialect.name == "sqlite":
        with transaction(factory) as session:
            yield session.connection()
        return
    with driver_errors(bind):
        held = _held_connection(bind)
    if held is None:
        with driver_errors(bind), bind.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
        return
    # The thread's held connection (``holding_connections``), in the driver's autocommit for this one
    # statement: a checkout from the pool, with its events, isolation level set and reset, cost more than
    # the statement (issue 23: a capped run's every submission records its hand-over this way).
    dbapi_connection: Any = held.connection.dbapi_connection
    failed = True
    try:
        with driver_errors(bind):
            dbapi_connection.autocommit = True
            try:
                yield held
                if held.in_transaction():  # SQLAlchemy's begin around the statement: nothing to send
                    held.commit()
                failed = False
            finally:
                if held.in_transaction():
                    held.rollback()
                if not held.invalidated and not dbapi_connection.closed:
                    dbapi_connection.autocommit = False
    finally:
        _give_back_held(bind, failed=failed)


@contextmanager
def read_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that only reads (progress displays, status, export): on SQLite it takes no write
    lock, so polling never delays the workers' writes. Writing in it is a programming error."""
    session = factory()
    try:
        with driver_errors(factory.kw.get("bind")):
            session.connection(execution_options={READ_ONLY: True})
            yield session
    finally:
        # Closing ends the transaction (the pool rolls the connection back) and, unlike an explicit
        # rollback, leaves the objects read usable afterwards.
        session.close()
