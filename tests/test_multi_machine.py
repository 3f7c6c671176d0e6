"""Several machines with nothing shared but PostgreSQL, Redis and S3, all over TCP.

Machine A (127.0.0.2) enqueues the run with ``run --detach`` and runs beat; machines B (127.0.0.3) and
C (127.0.0.4) each run a web process and a Celery worker; nginx (127.0.0.5) balances the run's port over
the two web processes, with ``infra/nginx/nginx.conf``. 100 simulated workers
(``benchmarks/load.py``, over HTTP through nginx) submit 500 units, each with a file, at cap 50. A sampler
reads the database throughout. Then the same again, with B's worker and C's web process SIGKILLed
mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import make_engine, make_sessionmaker, transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.domain.status import UNIT_ACTIVE, UnitStatus
from tests.cluster import Machine, machine, nginx, redis_over_tcp
from tests.conftest import free_port, wait_for
from tests.system import ROOT
from tests.taskdirs import write_task_dir

UNITS = 500
CAP = 50
WORKERS = 100
UPLOAD_BYTES = 300

pytestmark = [pytest.mark.postgres, pytest.mark.system]


class Sampler(threading.Thread):
    """Server side: how many of the run's units are launched or assigned, every few milliseconds."""

    def __init__(self, database_url: str, run_id: int) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.run_id = run_id
        self.most = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        query = select(func.count()).select_from(Unit).where(
            Unit.task_run_id == self.run_id, Unit.status.in_([s.value for s in UNIT_ACTIVE]))
        while not self.halt.is_set():
            with transaction(self.sessions) as session:
                self.most = max(self.most, int(session.scalar(query) or 0))
            self.samples += 1
            self.halt.wait(0.005)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self.engine.dispose()


def submitted(database_url: str, run_id: int) -> int:
    engine = make_engine(database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return int(session.scalar(select(func.count()).select_from(Unit).where(
                Unit.task_run_id == run_id, Unit.status == UnitStatus.COMPLETED.value)) or 0)
    finally:
        engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, s3_storage_url: str) -> Iterator[dict[str, Any]]:
    with redis_over_tcp(tmp_path) as redis_url:
        shared = {"MEPHISTO_DIST_DATABASE_URL": pg_url, "MEPHISTO_DIST_REDIS_URL": redis_url,
                  "MEPHISTO_DIST_STORAGE_URL": s3_storage_url}
        engine = make_engine(pg_url)
        upgrade(engine)  # the release step
        engine.dispose()
        a = machine(tmp_path, "127.0.0.2", shared, RUN_SWEEP_EVERY_S="1")
        b = machine(tmp_path, "127.0.0.3", shared, RUN_SWEEP_EVERY_S="1")
        c = machine(tmp_path, "127.0.0.4", shared, RUN_SWEEP_EVERY_S="1")
        machines = [a, b, c]
        try:
            yield {"a": a, "b": b, "c": c, "pg_url": pg_url, "tmp": tmp_path}
        finally:
            for m in machines:
                m.stop_all()


def start_run(tmp: Path, a: Machine, balancer_port: int, name: str) -> int:
    task_dir = write_task_dir(tmp / name, rows=UNITS, port=balancer_port, cap=CAP, task_name=name)
    created = a.cli("run", str(task_dir), "--detach", "--quiet")
    assert created.returncode == 0, created.stderr
    return int(created.stdout.strip().splitlines()[-1])


def load(url: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "load.py"), url, "--workers", str(WORKERS),
                             "--units", str(UNITS), "--duration", "240", "--think-ms", "20",
                             "--upload-bytes", str(UPLOAD_BYTES), "--json", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_everything_exported(d: Machine, pg_url: str, run_id: int, result: dict[str, Any]) -> None:
    engine = make_engine(pg_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            statuses = dict(session.execute(select(Unit.status, func.count()).where(Unit.task_run_id == run_id)
                                            .group_by(Unit.status)).all())
            submitted_agents = session.execute(select(Agent.unit_id).join(Unit, Unit.id == Agent.unit_id).where(
                Unit.task_run_id == run_id, Agent.outputs.is_not(None))).scalars().all()
            is_completed = session.get(TaskRun, run_id).is_completed  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert statuses == {UnitStatus.COMPLETED.value: UNITS}
    assert len(submitted_agents) == UNITS and len(set(submitted_agents)) == UNITS  # each unit done once
    assert is_completed
    # Every answer the clients had accepted is in the database (a unit may have gone to a second
    # worker only if the first never got "Submitted!": then the first's answer was never taken).
    downloads = d.data_dir / f"downloads-{run_id}"
    exported = d.cli("export", "--run", str(run_id), "--download", str(downloads))
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(records) == UNITS
    by_agent = {r["agent_id"]: r for r in records}
    assert set(result["accepted_agents"]) <= set(by_agent)
    for agent_id, record in by_agent.items():
        outputs = record["data"]["outputs"]
        assert outputs["comment"] == f"from {agent_id}"
        evidence = outputs["evidence"]
        content = (downloads / Path(*evidence["storage_key"].split("/"))).read_bytes()
        assert content.startswith(agent_id.encode()) and len(content) == UPLOAD_BYTES


def test_five_hundred_units_through_a_balancer_over_three_machines(cluster: dict[str, Any]) -> None:
    a, b, c, tmp, pg_url = cluster["a"], cluster["b"], cluster["c"], cluster["tmp"], cluster["pg_url"]
    port = free_port("127.0.0.5")
    web_b, web_c = free_port("127.0.0.3"), free_port("127.0.0.4")

    run_id = start_run(tmp, a, port, "cluster-steady")
    a.beat()
    b.worker("worker-b")
    c.worker("worker-c")
    b.web(web_b, port)
    c.web(web_c, port)
    with nginx(tmp / "nginx", "127.0.0.5", port, [f"127.0.0.3:{web_b}", f"127.0.0.4:{web_c}"]) as url:
        _drive(url, tmp / "steady.json", pg_url, run_id, kill=None)
    d = machine(tmp, "127.0.0.6", {k: v for k, v in a.env.items() if k.startswith("MEPHISTO_DIST_")
                                   and k != "MEPHISTO_DIST_DATA_DIR"})
    result = json.loads((tmp / "steady.json").read_text())
    check_everything_exported(d, pg_url, run_id, result)
    # Nothing was read from another machine's disk: B and C fetched the bundle into their own caches.
    assert list((b.data_dir / "bundle-cache").iterdir()) and list((c.data_dir / "bundle-cache").iterdir())
    assert not (a.data_dir / "storage").exists()


def test_the_run_finishes_when_a_worker_and_a_web_process_are_killed(cluster: dict[str, Any]) -> None:
    a, b, c, tmp, pg_url = cluster["a"], cluster["b"], cluster["c"], cluster["tmp"], cluster["pg_url"]
    port = free_port("127.0.0.5")
    web_b, web_c = free_port("127.0.0.3"), free_port("127.0.0.4")

    run_id = start_run(tmp, a, port, "cluster-killed")
    a.beat()
    worker_b = b.worker("worker-b")
    c.worker("worker-c")
    b.web(web_b, port)
    doomed_web = c.web(web_c, port)

    def kill() -> None:
        b.kill(worker_b)
        c.kill(doomed_web)

    with nginx(tmp / "nginx", "127.0.0.5", port, [f"127.0.0.3:{web_b}", f"127.0.0.4:{web_c}"]) as url:
        _drive(url, tmp / "killed.json", pg_url, run_id, kill=kill)
    d = machine(tmp, "127.0.0.6", {k: v for k, v in a.env.items() if k.startswith("MEPHISTO_DIST_")
                                   and k != "MEPHISTO_DIST_DATA_DIR"})
    check_everything_exported(d, pg_url, run_id, json.loads((tmp / "killed.json").read_text()))


def _drive(url: str, out: Path, pg_url: str, run_id: int, kill: Any) -> None:
    sampler = Sampler(pg_url, run_id)
    sampler.start()
    try:
        wait_for(lambda: sampler.most >= CAP, timeout_s=60, message="the workers to launch the first units")
        clients = load(url, out)
        if kill is not None:
            wait_for(lambda: clients.poll() is not None or submitted(pg_url, run_id) >= UNITS // 3,
                     timeout_s=120, interval_s=0.1, message="a third of the units to be submitted")
            kill()
        clients.wait(300)
        wait_for(lambda: submitted(pg_url, run_id) == UNITS, timeout_s=60, message="every unit submitted")
    finally:
        sampler.stop()
    assert sampler.samples > 50
    assert sampler.most <= CAP, f"{sampler.most} units held at once, over the cap of {CAP}"
    result = json.loads(out.read_text())
    assert result["units"] >= UNITS
    result_agents = result.get("accepted_agents")
    assert result_agents is not None
