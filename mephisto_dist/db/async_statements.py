"""PostgreSQL: the hot path's one-statement calls on an event loop, through psycopg's async connections.

A claim and a submission are one statement each in autocommit (``db.transitions.claim_alone``,
``complete_submission_alone``). Run on a thread, each paid for the hand-off to it and back, and for the
thread contending with the event loop for the interpreter while it waited on the network: more than the
statement's own work (issue 23). Here the statement is sent from the loop and the loop serves other
requests while PostgreSQL works.

The statement is the same :class:`~mephisto_dist.db.prepared.Prepared` plan the threads run (the same SQL
text, the same bind and result processors, the dialect's own psycopg adapters), on connections of its
own, in autocommit. A driver's failure becomes what :func:`~mephisto_dist.db.engine.driver_errors` makes
of it on a thread (an ``Unreachable`` for a lost connection, which the web waits out); a connection that
failed, or whose statement was interrupted, is closed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from typing import Any, NoReturn

import psycopg
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import ClauseElement

from mephisto_dist.db.engine import driver_errors
from mephisto_dist.db.prepared import Ran, prepared

CONNECT_TIMEOUT_S = 10
"""How long making a connection may take (libpq's ``connect_timeout``: whole seconds, at least 2)."""


class AsyncStatements:
    """Up to ``size`` async connections to ``engine``'s PostgreSQL database, made when first needed, for
    statements atomic by themselves. Made and used on one event loop."""

    def __init__(self, engine: Engine, size: int) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            raise ValueError(f"async statements need PostgreSQL through psycopg, not {engine.dialect.name}")
        self._engine = engine
        self._dialect = engine.dialect
        self._size = max(1, size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._open = 0  # connections made or being made, idle or in use
        self._waiting: deque[asyncio.Future[psycopg.AsyncConnection[Any] | None]] = deque()
        self._closed = False

    async def run(self, statement: ClauseElement, params: Mapping[str, Any]) -> Ran:
        """Run a statement built once (``db.prepared.prepared``) in autocommit; its rows as a thread's
        ``prepared.run`` returns them."""
        plan = prepared(statement).plan(self._dialect)
        arguments = plan.arguments(params)
        connection = await self._take()
        kept = False
        try:
            cursor = connection.cursor()
            try:
                await cursor.execute(plan.sql, arguments)
                description = cursor.description
                raw = await cursor.fetchall() if description else []
                rowcount = cursor.rowcount
            finally:
                await cursor.close()
            kept = True
        except psycopg.Error as error:
            # A statement's own failure leaves an autocommit connection usable; a lost one does not.
            kept = not (connection.closed or connection.broken or isinstance(error, psycopg.OperationalError))
            self._raise(error, plan.sql, arguments)
        finally:
            if kept:
                self._give_back(connection)
            else:
                await self._drop(connection)
        return plan.ran(raw, description, rowcount, self._dialect)

    async def aclose(self) -> None:
        """Close the idle connections; one in use is closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            await connection.close()
        while self._waiting:
            self._waiting.popleft().cancel()

    def _raise(self, error: psycopg.Error, sql: str, arguments: Any) -> NoReturn:
        """The driver's error as SQLAlchemy's (its classes: an integrity error stays one) and then as the
        web's one line (``driver_errors``)."""
        wrapped = sa_exc.DBAPIError.instance(sql, arguments, error, psycopg.Error,
                                            dialect=self._dialect, ismulti=False)
        with driver_errors(self._engine):
            raise wrapped from error
        raise wrapped from error  # (driver_errors lets a constraint violation through)

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        if self._closed:
            raise RuntimeError("these async statements are closed")
        if self._idle:
            return self._idle.pop()
        if self._open >= self._size:
            waiter: asyncio.Future[psycopg.AsyncConnection[Any] | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter  # a connection given back, or None: a place freed, to connect
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed something just before the cancel
                    given = waiter.result()
                    if given is not None:
                        self._give_back(given)
                    else:
                        self._open -= 1
                        self._wake_one()
                raise
            if handed is not None:
                return handed
        else:
            self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        args, params = self._dialect.create_connect_args(self._engine.url)
        # A server that accepts and never answers (a hung host, a half-open balancer) is an outage the
        # web waits out, not a request held without end: bounded unless the URL sets its own.
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        try:
            return await psycopg.AsyncConnection.connect(*args, autocommit=True, **params)
        except psycopg.Error as error:
            self._raise(error, "(connecting)", None)

    def _give_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if self._closed:
            self._open -= 1
            asyncio.get_running_loop().create_task(connection.close())
            return
        self._idle.append(connection)

    async def _drop(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._open -= 1
        self._wake_one()
        with contextlib.suppress(psycopg.Error):
            await connection.close()

    def _wake_one(self) -> None:
        """A place is free: the first waiter, if any, makes a connection of its own."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return
