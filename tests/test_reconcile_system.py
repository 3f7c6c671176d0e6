"""The whole system SIGKILLed mid-run with HITs live on a real mturk-local and its server running; the run
is then stopped (``shutdown --force``) while MTurk cannot be reached; only beat and one worker are started
again, with MTurk back: every HIT no worker holds is expired, the dead server's record is closed, the
assignments submitted on MTurk while we were down are recorded with their answers, and the run's data
is intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, ProviderSubmission, Server, Unit
from mephisto_dist.settings import load_settings
from tests.conftest import wait_for
from tests.mturk_local_process import client, external_question
from tests.system import ROOT, celery_beat, celery_worker, free_port, make_runtime
from tests.test_lifecycle_system import AttachedRun, _external_env
from tests.test_mturk_run_cli import PROVIDER, aws_env, hits, register_lab, work_one

pytestmark = pytest.mark.system


@contextmanager
def turk_on(port: int, db: Path, log: Path) -> Iterator[str]:
    """mturk-local on a fixed port, so that it comes back where the run's requester expects it."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "mturk-local", "--port", str(port), "--db", str(db),
             "--rate", "0"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/api/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout_s=30, message="mturk-local to start")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def descendants(pid: int) -> list[int]:
    """Every process started (directly or not) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_everything(run: AttachedRun) -> None:
    """SIGKILL the CLI and every process it started (web, Celery worker and its pool, beat) at once."""
    victims = [run.process.pid, *descendants(run.process.pid)]
    for pid in victims:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.process.wait(10)


def submit_on_turk(turk: str, worker_id: str, assignment_id: str | None = None) -> dict[str, Any]:
    """A worker submits (the assignment they hold, or a HIT they accept now) on MTurk only: our web tier
    is down."""
    if assignment_id is None:
        hit_id = httpx.get(f"{turk}/api/hits", params={"workerId": worker_id}).json()["HITs"][0]["HITId"]
        accepted = httpx.post(f"{turk}/api/hits/{hit_id}/accept", json={"workerId": worker_id})
        assert accepted.status_code == 200, accepted.text
        assignment_id = accepted.json()["AssignmentId"]
    done = httpx.post(f"{turk}/mturk/externalSubmit", data={"assignmentId": assignment_id, "rating": "4"},
                      headers={"accept": "application/json"})
    assert done.status_code == 200, done.text
    return {"assignment_id": assignment_id}


def test_beat_and_one_worker_clean_up_after_the_whole_system_was_killed(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_env(tmp_path).items():  # the requester's keys, for every process started here
        monkeypatch.setenv(name, value)
    port = free_port()
    turk_db, turk_log = tmp_path / "turk.sqlite3", tmp_path / "turk.log"
    # The killed beat's lock outlives it by BEAT_LOCK_TIMEOUT_S before the new beat may fire.
    settings_env = _external_env(tmp_path, redis_url, MEPHISTO_DIST_RECONCILE_EVERY_S="2",
                                 MEPHISTO_DIST_HEARTBEAT_EVERY_S="1", MEPHISTO_DIST_BEAT_LOCK_TIMEOUT_S="3")
    with turk_on(port, turk_db, turk_log) as turk:
        register_lab(tmp_path, turk)
        mturk = client(turk)
        run = AttachedRun(tmp_path, *PROVIDER, rows=4, env={**aws_env(tmp_path), **settings_env})
        try:
            run.wait_for_output(r"launched in", timeout_s=90)
            wait_for(lambda: len(hits(mturk)) == 4, timeout_s=60, message="4 HITs up")
            held = work_one(turk, run.url, "A1HOLDER", submit=False)  # took a unit through our server
            assert held is not None
            foreign = make_foreign_hit(mturk)  # another tool's HIT on the same account
        finally:
            kill_everything(run)
        # Everything is dead. Workers go on on MTurk: the holder submits there, another worker does a HIT
        # that never reached us.
        late = submit_on_turk(turk, "A1HOLDER", held["assignment_id"])
        unseen = submit_on_turk(turk, "A2NEVERSEEN")
    # MTurk cannot be reached while the researcher stops the run.
    env = {**run.env, **aws_env(tmp_path), **settings_env}
    stopped = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "shutdown", "1", "--force"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120, check=False)
    assert stopped.returncode == 3 and "MTurk" in stopped.stderr, stopped.stderr + stopped.stdout
    assert sum(1 for h in hits_of(turk_db, port, turk_log) if h["HITStatus"] == "Assignable") == 3

    settings = load_settings(env)
    rt = make_runtime(tmp_path / "data", settings.database_url, redis_url)
    with transaction(rt.sessions) as session:
        web = session.scalars(select(Server)).one()
        assert web.status == "running"  # killed: nothing closed its record
    redis_client = redis.Redis.from_url(redis_url)
    redis_client.delete("mephisto")  # the broker's queue: tasks sent before the kill must not do the work
    with turk_on(port, turk_db, turk_log) as turk, \
            celery_worker(settings, tmp_path / "worker.log"), celery_beat(settings, tmp_path / "beat.log"):
        mturk = client(turk)

        def cleaned() -> bool:
            found = {h["HITId"]: h for h in hits(mturk)}
            up = [i for i, h in found.items() if h["HITStatus"] == "Assignable" and i != foreign]
            with transaction(rt.sessions) as session:
                recorded = session.scalar(select(func.count()).select_from(ProviderSubmission))
                server_status = session.scalars(select(Server.status)).one()
            return not up and recorded == 2 and server_status == "stopped"

        # A HIT pass killed mid-way with the rest keeps the account for its lease (hits.LEASE_S, 30 s) at most.
        try:
            wait_for(cleaned, timeout_s=90, interval_s=0.5,
                     message="beat and the worker to expire the HITs, record the submissions and close the server")
        except AssertionError as late_or_stuck:
            logs = {name: (tmp_path / name).read_text()[-6000:] for name in ("worker.log", "beat.log")}
            raise AssertionError(f"{late_or_stuck}\n" + "\n".join(f"--- {k}\n{v}" for k, v in logs.items())) \
                from None
        assert client(turk).get_hit(HITId=foreign)["HIT"]["HITStatus"] == "Assignable"  # never touched
    with transaction(rt.sessions) as session:
        submissions = {s.assignment_id: s for s in session.scalars(select(ProviderSubmission))}
        assert set(submissions) == {late["assignment_id"], unseen["assignment_id"]}
        assert all(s.status == "needs review" and "rating" in (s.answer or "") for s in submissions.values())
        assert submissions[late["assignment_id"]].worker_name == "A1HOLDER"
        units = {hit_id: status for hit_id, status in session.execute(select(Unit.provider_unit_id, Unit.status))}
        assert len(units) == 4 and units[held["hit_id"]] == "assigned"  # nothing lost, nothing invented
        holder = session.scalars(select(Agent).where(Agent.id == held["agent_id"])).one()
        assert holder.submitted_at is None  # its submission is the recorded one, flagged for review
    rt.close()

    def status_says() -> str:
        status = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "status", "1"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        return " ".join((status.stdout + status.stderr).split())

    said = status_says()
    assert "2 assignment(s) submitted on MTurk never reached us" in said, said
    # Beat was stopped a moment ago: status calls it gone once its heartbeat is older than the allowance.
    wait_for(lambda: "beat: NOT running" in status_says(), timeout_s=30, interval_s=0.5,
             message="status to say beat is not running")
    listed = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "hits", "unreceived", "--run", "1"],
                            cwd=ROOT, env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=120,
                            check=False)
    assert late["assignment_id"] in listed.stdout and unseen["assignment_id"] in listed.stdout, listed.stdout
    assert "A2NEVERSEEN" in listed.stdout and "rating" in listed.stdout


def hits_of(db: Path, port: int, log: Path) -> list[dict[str, Any]]:
    with turk_on(port, db, log) as turk:
        return hits(client(turk))


def make_foreign_hit(mturk: Any) -> str:
    type_id = mturk.create_hit_type(Title="Someone else's survey", Description="Not ours", Reward="0.20",
                                    AssignmentDurationInSeconds=600, AutoApprovalDelayInSeconds=86400)["HITTypeId"]
    return str(mturk.create_hit_with_hit_type(
        HITTypeId=type_id, MaxAssignments=1, LifetimeInSeconds=3600, RequesterAnnotation="survey-tool batch 7",
        Question=external_question("https://example.org/survey"))["HIT"]["HITId"])
