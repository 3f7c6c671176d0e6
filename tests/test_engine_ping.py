"""Pooled PostgreSQL connections: one idle in the pool is pinged before use (and replaced when its
server side is gone); one used a moment ago is trusted, with no extra round trip on the hot path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, text

from mephisto_dist.db import engine as engine_module
from mephisto_dist.db.engine import make_engine


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
