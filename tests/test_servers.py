"""Worker-facing servers: recorded before they listen, beating while they run, stopping themselves, and
beat's server reconciler (two at once do the work once), with real web, worker and beat processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from mephisto_dist.architects.local import LocalArchitect
from mephisto_dist.architects.servers import NewServer, ask_to_stop, record_server
from mephisto_dist.db.engine import make_engine, make_sessionmaker, transaction
from mephisto_dist.db.models import ReconcileRecord, Server, TaskRun
from mephisto_dist.domain.servers import Action
from mephisto_dist.reconcile.servers import reconcile_servers
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.factories import make_run
from tests.system import ROOT, celery_beat, celery_worker, child_env, free_port, make_runtime


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, HEARTBEAT_EVERY_S="0.5",
                      RECONCILE_EVERY_S="1", RUN_SWEEP_EVERY_S="1")
    yield rt
    rt.close()


def _server(rt: Runtime, run_id: int) -> Server | None:
    with transaction(rt.sessions) as session:
        server = session.scalar(select(Server).where(Server.task_run_id == run_id).order_by(Server.id.desc()))
        if server is not None:
            session.expunge(server)
        return server


def _start_web(rt: Runtime, run_id: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.web", "--run", str(run_id), "--port", str(port)], cwd=ROOT,
            env=child_env(rt.settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            httpx.get(url + "/", timeout=1)  # any answer: the factory's run has no task files
            return True
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout_s=30, message="the web server to answer")
    return process, url


@pytest.mark.system
def test_a_local_server_is_recorded_beats_and_stops_when_its_record_or_run_says_so(
        tmp_path: Path, runtime: Runtime) -> None:
    run = make_run(runtime.sessions)
    process, url = _start_web(runtime, run.run_id, tmp_path / "web.log")
    try:
        server = wait_for(lambda: (s := _server(runtime, run.run_id)) is not None and s.status == "running" and s,
                          message="the server's record to say running")
        assert server.pid == process.pid and server.architect == "local" and server.address.endswith(url[-5:])
        first_beat = server.heartbeat_at
        wait_for(lambda: (_server(runtime, run.run_id) or server).heartbeat_at != first_beat,
                 message="a further heartbeat")
        with transaction(runtime.sessions) as session:
            assert ask_to_stop(session, server.id, "asked by the test", now=_now())
        assert process.wait(20) == 0
        stopped = _server(runtime, run.run_id)
        assert stopped is not None and stopped.status == "stopped"
        assert stopped.note == "its record is marked stopping"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    # A second server of the run stops itself once the run has ended.
    process, url = _start_web(runtime, run.run_id, tmp_path / "web2.log")
    try:
        with transaction(runtime.sessions) as session:
            session.execute(update(TaskRun).where(TaskRun.id == run.run_id)
                            .values(is_completed=True, completed_at=_now()))
        assert process.wait(20) == 0
        stopped = _server(runtime, run.run_id)
        assert stopped is not None and stopped.status == "stopped"
        assert stopped.note == f"its run {run.run_id} has ended"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def _add_server(rt: Runtime, run_id: int | None, *, beat_ago_s: float) -> int:
    with transaction(rt.sessions) as session:
        server_id = record_server(session, NewServer(run_id, "local", "test-host", "http://test-host:1"), now=_now())
        beat = _now() - timedelta(seconds=beat_ago_s)
        session.execute(update(Server).where(Server.id == server_id).values(
            status="running", heartbeat_at=beat, status_changed_at=beat))
        return server_id


@pytest.mark.system
def test_two_server_reconcilers_at_once_do_the_work_once(runtime: Runtime, database_url: str) -> None:
    live = make_run(runtime.sessions, task_name="live").run_id
    finished = make_run(runtime.sessions, task_name="finished").run_id
    with transaction(runtime.sessions) as session:
        session.execute(update(TaskRun).where(TaskRun.id == finished).values(is_completed=True, completed_at=_now()))
    answering = _add_server(runtime, live, beat_ago_s=1)
    of_finished = _add_server(runtime, finished, beat_ago_s=1)
    of_unknown = _add_server(runtime, 999, beat_ago_s=1)
    silent = _add_server(runtime, live, beat_ago_s=300)
    dead_of_finished = _add_server(runtime, finished, beat_ago_s=300)

    # Two "processes": each its own engine and sessions, started together.
    factories = [make_sessionmaker(make_engine(database_url)) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[list[tuple[int, Action]]] = []

    def reconcile(index: int) -> None:
        barrier.wait()
        decisions = reconcile_servers(factories[index], lambda name: LocalArchitect(runtime), now=_now(),
                                      stale_s=60, deploy_grace_s=60)
        results.append([(d.server_id, d.action) for d in decisions])

    threads = [threading.Thread(target=reconcile, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = sorted(pair for result in results for pair in result)
    assert done == sorted([(of_finished, Action.STOP), (of_unknown, Action.STOP), (silent, Action.FLAG_LOST),
                           (dead_of_finished, Action.MARK_STOPPED)])
    with transaction(runtime.sessions) as session:
        statuses = dict(session.execute(select(Server.id, Server.status)).all())
        assert statuses == {answering: "running", of_finished: "stopping", of_unknown: "stopping",
                            silent: "lost", dead_of_finished: "stopped"}
        assert session.scalar(select(func.count()).select_from(ReconcileRecord)) == 4
        found = dict(session.execute(select(ReconcileRecord.subject, ReconcileRecord.found)).all())
        assert found[f"server {of_unknown} (local)"] == "its run is unknown"
    # A further pass finds nothing new to do.
    again = reconcile_servers(runtime.sessions, lambda name: LocalArchitect(runtime), now=_now(),
                              stale_s=60, deploy_grace_s=60)
    assert again == []
    shown = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "status", str(live)], cwd=ROOT,
                           env=child_env(runtime.settings), capture_output=True, text=True, timeout=60, check=True)
    said = " ".join(shown.stdout.split())
    assert f"server {silent}: lost" in said and f"server {silent} of a live run stopped answering" in said, said


@pytest.mark.system
def test_beat_closes_the_record_of_a_killed_server_whose_run_ended(tmp_path: Path, sqlite_url: str,
                                                                   redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url, HEARTBEAT_EVERY_S="0.5", RECONCILE_EVERY_S="1")
    try:
        run = make_run(rt.sessions)
        process, _ = _start_web(rt, run.run_id, tmp_path / "web.log")
        wait_for(lambda: (s := _server(rt, run.run_id)) is not None and s.status == "running",
                 message="the server to run")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        with transaction(rt.sessions) as session:
            session.execute(update(TaskRun).where(TaskRun.id == run.run_id)
                            .values(is_completed=True, completed_at=_now()))
        assert (_server(rt, run.run_id) or Server()).status == "running"  # nothing closed it yet
        with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"):
            server = wait_for(lambda: (s := _server(rt, run.run_id)) is not None and s.status == "stopped" and s,
                              timeout_s=30, message="beat's reconciler to close the dead server's record")
        assert server.note == "mark stopped: its run is finished"
        shown = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "reconciled"], cwd=ROOT,
                               env=child_env(rt.settings), capture_output=True, text=True, timeout=60, check=True)
        assert (f"servers: server {server.id} (local): its run is finished -> mark stopped (done)"
                in " ".join(shown.stdout.split())), shown.stdout
        status = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "status", str(run.run_id)], cwd=ROOT,
                                env=child_env(rt.settings), capture_output=True, text=True, timeout=60, check=True)
        assert f"server {server.id}: stopped (local" in " ".join(status.stdout.split()), status.stdout
    finally:
        rt.close()
