"""Where the worker pages find the run they serve: the resolver's cache, read without a thread while it is
as fresh as ``current`` would take it. On a real run (SQLite, Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.launcher import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.services import served
from mephisto_dist.services.served import RESOLVE_CACHE_S, RunResolver
from tests.system import make_runtime
from tests.test_router_surface import react_task_dir


@pytest.fixture
def runtime(tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'db.sqlite'}", redis_url)
    yield rt
    rt.close()


@pytest.fixture
def run_id(tmp_path: Path, runtime: Runtime) -> int:
    return create_run(runtime, prepare_run(react_task_dir(tmp_path), "example", [], check_port=False))


def test_the_resolver_answers_from_its_cache_only_while_current_would(runtime: Runtime, run_id: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = RunResolver(runtime, run_id, None)
    assert fixed.cached() is None
    fixed_run = fixed.current()
    assert fixed.cached() is fixed_run
    with transaction(runtime.sessions) as session:
        session.execute(update(TaskRun).where(TaskRun.id == run_id).values(architect_type="local"))
    clock = [1000.0]
    monkeypatch.setattr(served.time, "monotonic", lambda: clock[0])
    by_port = RunResolver(runtime, None, None)
    assert by_port.cached() is None
    run = by_port.current()
    clock[0] += RESOLVE_CACHE_S / 2
    assert by_port.cached() is run and fixed.cached() is fixed_run
    clock[0] += RESOLVE_CACHE_S
    assert by_port.cached() is None and fixed.cached() is fixed_run
    assert by_port.current() is not run and by_port.cached() is not None  # read again, then cached
