"""Orphaned HITs and submissions that never reached us, against a real mturk-local process: the HIT
reconciler (two at once do the work once; a foreign HIT is never touched) and the ``hits outstanding``
and ``cleanup`` commands on HITs of runs no longer in the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select, update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ProviderSubmission, ReconcileRecord, Unit
from mephisto_dist.domain.hits import HitAction
from mephisto_dist.heartbeats.keys import reconcile_lock_key
from mephisto_dist.providers.mturk.credentials import save_profile
from mephisto_dist.providers.mturk.mapping import annotation
from mephisto_dist.providers.requesters import register
from mephisto_dist.reconcile import hits
from mephisto_dist.reconcile.hits import reconcile_all
from mephisto_dist.runs.task_runs import NewRun, create_task_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.factories import make_run
from tests.mturk_local_process import FAKE_KEY_ID, FAKE_SECRET, client, external_question, mturk_local
from tests.system import ROOT, child_env, make_runtime

pytestmark = pytest.mark.system

TASK_URL = "https://example.org/task"


@pytest.fixture
def turk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    credentials = tmp_path / "aws" / "credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    save_profile("lab", FAKE_KEY_ID, FAKE_SECRET, credentials)
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as url:
        yield url


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str, turk: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url)
    with transaction(rt.sessions) as session:
        register(session, "mturk_sandbox", "lab", aws_profile="lab", endpoint_url=turk, now=datetime.now(UTC))
    yield rt
    rt.close()


def make_hit(mturk: Any, note: str, *, max_assignments: int = 1) -> str:
    type_id = mturk.create_hit_type(Title="Rate a sentence", Description="Rate it", Reward="0.10",
                                    AssignmentDurationInSeconds=600, AutoApprovalDelayInSeconds=86400)["HITTypeId"]
    return str(mturk.create_hit_with_hit_type(HITTypeId=type_id, MaxAssignments=max_assignments,
                                              LifetimeInSeconds=3600, Question=external_question(TASK_URL),
                                              RequesterAnnotation=note)["HIT"]["HITId"])


def work(turk: str, hit_id: str, worker: str) -> str:
    accepted = httpx.post(f"{turk}/api/hits/{hit_id}/accept", json={"workerId": worker})
    assert accepted.status_code == 200, accepted.text
    assignment_id = str(accepted.json()["AssignmentId"])
    done = httpx.post(f"{turk}/mturk/externalSubmit", data={"assignmentId": assignment_id, "rating": "5"},
                      headers={"accept": "application/json"})
    assert done.status_code == 200, done.text
    return assignment_id


def hit(mturk: Any, hit_id: str) -> dict[str, Any] | None:
    """The HIT as GetHIT returns it; None once deleted (gone, or kept as Disposed)."""
    try:
        found = dict(mturk.get_hit(HITId=hit_id)["HIT"])
    except mturk.exceptions.RequestError:
        return None
    return None if found["HITStatus"] == "Disposed" else found


def test_orphaned_hits_are_expired_then_deleted_once_and_foreign_ones_never_touched(
        runtime: Runtime, turk: str, redis_url: str) -> None:
    mturk = client(turk)
    live = make_run(runtime.sessions, task_name="live")
    with transaction(runtime.sessions) as session:
        unit_id = session.scalars(select(Unit.id).where(Unit.task_run_id == live.run_id)).first()
    live_hit = make_hit(mturk, annotation("default", live.run_id, unit_id or 0))
    with transaction(runtime.sessions) as session:
        session.execute(update(Unit).where(Unit.id == unit_id).values(provider_unit_id=live_hit))
    gone_run_hit = make_hit(mturk, annotation("default", 999, 5))
    submitted_hit = make_hit(mturk, annotation("default", 998, 7))
    foreign_hit = make_hit(mturk, "made by a colleague's script")
    other_deployment_hit = make_hit(mturk, annotation("staging", 999, 5))
    assignment_id = work(turk, submitted_hit, "AWORKER1")  # while we were down: it never reached us

    # Two reconcilers at the same moment, each with its own connections.
    barrier = threading.Barrier(2)
    results: list[list[tuple[str, HitAction]]] = []

    def reconcile() -> None:
        connection = redis.Redis.from_url(redis_url)
        barrier.wait()
        decided = reconcile_all(runtime.sessions, connection, "default", now=datetime.now(UTC))
        results.append([(d.hit_id, d.action) for d in decided])
        connection.close()

    threads = [threading.Thread(target=reconcile) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # The submitted HIT is already closed (Reviewable): it waits for its review, not for an expiry.
    assert sorted(pair for result in results for pair in result) == [(gone_run_hit, HitAction.EXPIRE)]
    assert hit(mturk, gone_run_hit)["HITStatus"] == "Reviewable"  # type: ignore[index]
    with transaction(runtime.sessions) as session:
        recorded = session.scalars(select(ProviderSubmission)).all()
        assert [(r.assignment_id, r.worker_name, r.hit_id, r.status) for r in recorded] == [
            (assignment_id, "AWORKER1", submitted_hit, "needs review")]
        assert "rating" in (recorded[0].answer or "")
        assert len(session.scalars(select(ReconcileRecord).where(ReconcileRecord.reconciler == "hits")).all()) == 1

    # The next pass deletes the expired orphan with nothing to review; the submitted one waits for review.
    second = reconcile_all(runtime.sessions, redis.Redis.from_url(redis_url), "default", now=datetime.now(UTC))
    assert [(d.hit_id, d.action) for d in second] == [(gone_run_hit, HitAction.DELETE)]
    assert hit(mturk, gone_run_hit) is None
    mturk.approve_assignment(AssignmentId=assignment_id)
    third = reconcile_all(runtime.sessions, redis.Redis.from_url(redis_url), "default", now=datetime.now(UTC))
    assert [(d.hit_id, d.action) for d in third] == [(submitted_hit, HitAction.DELETE)]

    for untouched in (live_hit, foreign_hit, other_deployment_hit):
        found = hit(mturk, untouched)
        assert found is not None and found["HITStatus"] == "Assignable", untouched
    with transaction(runtime.sessions) as session:  # recorded once, however many passes saw it
        assert len(session.scalars(select(ProviderSubmission)).all()) == 1


def _cli(rt: Runtime, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**child_env(rt.settings), "COLUMNS": "250"}  # a wide "terminal": table cells stay on one line
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False, input=input_text)


def test_hits_outstanding_and_cleanup_for_a_run_no_longer_in_the_database(
        tmp_path: Path, sqlite_url: str, redis_url: str, turk: str) -> None:
    rt = make_runtime(tmp_path / "cli", sqlite_url, redis_url)
    with transaction(rt.sessions) as session:
        register(session, "mturk_sandbox", "lab", aws_profile="lab", endpoint_url=turk, now=datetime.now(UTC))
    mturk = client(turk)
    orphans = [make_hit(mturk, annotation("default", 4242, unit)) for unit in (1, 2)]
    foreign = make_hit(mturk, "someone else's")
    try:
        shown = _cli(rt, "hits", "outstanding", "--requester", "lab")
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        for orphan in orphans:
            assert orphan in text
        assert "orphan (run 4242 unit 1: its run is not in the database)" in text, shown.stdout
        assert "made by other tools" in text and foreign in text

        only_run = _cli(rt, "hits", "outstanding", "--run", "4242")
        assert foreign not in only_run.stdout and orphans[0] in only_run.stdout

        dry = _cli(rt, "cleanup", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "2 HIT(s) to clean up" in dry.stdout and "dry run: nothing was changed" in dry.stdout, dry.stdout
        assert "1 HIT(s) made by other tools left alone" in dry.stdout
        assert all(hit(mturk, h)["HITStatus"] == "Assignable" for h in [*orphans, foreign])  # type: ignore[index]

        refused = _cli(rt, "cleanup", input_text="n\n")
        assert "nothing was changed" in refused.stderr
        assert all(hit(mturk, h)["HITStatus"] == "Assignable" for h in orphans)  # type: ignore[index]

        done = _cli(rt, "cleanup", "--yes")
        assert "2 HIT(s) expired, 0 deleted" in done.stdout, done.stdout
        assert all(hit(mturk, h)["HITStatus"] == "Reviewable" for h in orphans)  # type: ignore[index]
        assert hit(mturk, foreign)["HITStatus"] == "Assignable"  # type: ignore[index]

        deleted = _cli(rt, "cleanup", "--yes", "--hit", foreign)
        assert "1 HIT(s) expired, 2 deleted" in deleted.stdout, deleted.stdout
        assert all(hit(mturk, h) is None for h in orphans)
        missing = _cli(rt, "cleanup", "--yes", "--hit", "NOSUCHHIT")
        assert missing.returncode == 4 and "no such HIT on the requester's account: NOSUCHHIT" in missing.stderr
    finally:
        rt.close()


def test_one_badly_registered_requester_is_named_and_the_others_are_still_listed_and_cleaned(
        tmp_path: Path, sqlite_url: str, redis_url: str, turk: str) -> None:
    rt = make_runtime(tmp_path / "cli", sqlite_url, redis_url)
    save_profile("gone", FAKE_KEY_ID, FAKE_SECRET, tmp_path / "aws" / "credentials")
    with transaction(rt.sessions) as session:
        now = datetime.now(UTC)
        register(session, "mturk_sandbox", "lab", aws_profile="lab", endpoint_url=turk, now=now)
        register(session, "mturk_sandbox", "gone", aws_profile="gone", endpoint_url="http://127.0.0.1:1", now=now)
        register(session, "mturk_sandbox", "nokeys", aws_profile="nokeys", endpoint_url=turk, now=now)
    mturk = client(turk)
    finished = make_run(rt.sessions, task_name="finished", assignments=1)
    with transaction(rt.sessions) as session:
        unit_id = session.scalars(select(Unit.id).where(Unit.task_run_id == finished.run_id)).one()
    done_hit = make_hit(mturk, annotation("default", finished.run_id, unit_id))
    with transaction(rt.sessions) as session:
        session.execute(update(Unit).where(Unit.id == unit_id).values(provider_unit_id=done_hit, status="accepted"))
    orphan = make_hit(mturk, annotation("default", 4242, 1))
    try:
        shown = _cli(rt, "hits", "outstanding")
        assert shown.returncode == 3, shown.stdout + shown.stderr
        text = " ".join(shown.stdout.split())
        assert "HITs of lab (mturk_sandbox): 2 ours" in text, shown.stdout
        assert f"done (run {finished.run_id} unit {unit_id}: accepted)" in text
        assert "orphan (run 4242 unit 1: its run is not in the database)" in text
        errors = shown.stderr.strip().splitlines()
        assert len(errors) == 2, shown.stderr
        gone = next(line for line in errors if "'gone'" in line)
        assert gone.startswith("error: requester 'gone' (mturk_sandbox): MTurk ListHITs failed"), gone
        nokeys = next(line for line in errors if "'nokeys'" in line)
        assert nokeys == ("error: requester 'nokeys' (mturk_sandbox): AWS profile 'nokeys' is not in the shared "
                          "credentials file; register the requester again with its keys"), nokeys
        assert FAKE_SECRET not in shown.stdout + shown.stderr

        cleaned = _cli(rt, "cleanup", "--yes", "--hit", "NOSUCHHIT")
        assert cleaned.returncode == 3, cleaned.stdout + cleaned.stderr
        assert "lab (mturk_sandbox): 2 HIT(s) expired, 0 deleted" in " ".join(cleaned.stdout.split())
        assert all(hit(mturk, h)["HITStatus"] == "Reviewable" for h in (done_hit, orphan))  # type: ignore[index]
        assert "error: requester 'gone' (mturk_sandbox)" in cleaned.stderr
        assert "no such HIT on the accounts that answered: NOSUCHHIT" in cleaned.stderr

        only_lab = _cli(rt, "hits", "outstanding", "--requester", "lab")
        assert only_lab.returncode == 0 and not only_lab.stderr, only_lab.stderr
        unknown = _cli(rt, "hits", "outstanding", "--requester", "nobody")
        assert unknown.returncode == 4 and "no MTurk requester named 'nobody'" in unknown.stderr
    finally:
        rt.close()


def test_a_unit_whose_hit_vanished_from_the_provider_is_relaunched_once(runtime: Runtime, turk: str,
                                                                          redis_url: str) -> None:
    mturk = client(turk)
    task = {"task_name": "relaunch", "task_title": "Rate a sentence", "task_description": "Rate it",
            "task_reward": 0.1, "task_tags": "rating", "assignment_duration_in_seconds": 600,
            "task_lifetime_in_seconds": 3600}
    new = NewRun(task_name="relaunch", blueprint_type="static_task", architect_type="local",
                 provider_type="mturk_sandbox", requester_name="lab", sandbox=True,
                 config={"task": task, "architect": {}, "blueprint": {},
                         "provider": {"requester_name": "lab", "aws_profile": "lab", "endpoint_url": turk}},
                 task_dir="/nonexistent", build_dir="/nonexistent", server_url="http://127.0.0.1:3999",
                 max_concurrent_units=0, units_per_assignment=1, pay_amount=0.1,
                 assignment_data=[{"text": "a"}, {"text": "b"}])
    now = datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        run_id = create_task_run(session, new, now=now)
        lost, kept = session.scalars(select(Unit.id).where(Unit.task_run_id == run_id).order_by(Unit.id)).all()
    kept_hit = make_hit(mturk, annotation("default", run_id, kept))
    with transaction(runtime.sessions) as session:
        long_ago = now - timedelta(minutes=5)
        session.execute(update(Unit).where(Unit.id == lost).values(
            status="launched", provider_unit_id="GONEHIT000000000000000000000000", launched_at=long_ago))
        session.execute(update(Unit).where(Unit.id == kept).values(
            status="launched", provider_unit_id=kept_hit, launched_at=long_ago))

    for _ in range(2):  # a second pass finds the new HIT hosted and does nothing more
        reconcile_all(runtime.sessions, redis.Redis.from_url(redis_url), "default", now=datetime.now(UTC))
    with transaction(runtime.sessions) as session:
        hit_ids = dict(session.execute(select(Unit.id, Unit.provider_unit_id).where(Unit.task_run_id == run_id)).all())
        relaunches = session.execute(select(ReconcileRecord.action, ReconcileRecord.found).where(
            ReconcileRecord.subject.like(f"unit {lost} %"))).all()
    assert hit_ids[kept] == kept_hit
    relaunched = hit(mturk, hit_ids[lost] or "")
    assert relaunched is not None and relaunched["HITStatus"] == "Assignable"
    assert relaunched["RequesterAnnotation"] == annotation("default", run_id, lost)
    assert [tuple(r) for r in relaunches] == [
        ("relaunched", f"launched here but its HIT is gone from the provider; new HIT {hit_ids[lost]}")]


def _process_of(db: Path) -> int:
    """The pid of the mturk-local serving ``db`` (found in /proc by its command line)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                command = (entry / "cmdline").read_bytes().split(b"\0")
                if b"mturk-local" in command and str(db).encode() in command:
                    return int(entry.name)
    raise AssertionError(f"no mturk-local process for {db}")


def test_a_pass_killed_midway_holds_the_account_for_its_lease_only(
        runtime: Runtime, turk: str, redis_url: str, tmp_path: Path) -> None:
    orphan = make_hit(client(turk), annotation("default", 999, 5))
    held = redis.Redis.from_url(redis_url)
    key = reconcile_lock_key("hits:mturk_sandbox:lab")
    # A pass in its own process, with a 2 s lease, stuck on a provider that stopped answering, then killed.
    turk_pid = _process_of(tmp_path / "turk.sqlite3")
    os.kill(turk_pid, signal.SIGSTOP)
    script = ("import sys, redis; from datetime import UTC, datetime; import mephisto_dist.reconcile.hits as h; "
              "from mephisto_dist.runtime import Runtime; from mephisto_dist.settings import load_settings; "
              "import os; h.LEASE_S = 2.0; rt = Runtime(load_settings(os.environ)); "
              "h.reconcile_all(rt.sessions, redis.Redis.from_url(sys.argv[1]), 'default', now=datetime.now(UTC))")
    stuck = subprocess.Popen([sys.executable, "-c", script, redis_url], cwd=ROOT, env=child_env(runtime.settings))
    try:
        wait_for(lambda: held.exists(key), timeout_s=30, message="the pass to take the account's lease")
    finally:
        stuck.kill()
        stuck.wait(10)
        os.kill(turk_pid, signal.SIGCONT)
    assert stuck.returncode == -signal.SIGKILL
    # Right away the account is still held; once the dead pass's lease runs out, the next pass does the work.
    assert reconcile_all(runtime.sessions, held, "default", now=datetime.now(UTC)) == []
    decided = wait_for(lambda: reconcile_all(runtime.sessions, held, "default", now=datetime.now(UTC)),
                       timeout_s=20, interval_s=0.2, message="a pass after the dead pass's lease ran out")
    assert [(d.hit_id, d.action) for d in decided] == [(orphan, HitAction.EXPIRE)]


def test_a_lease_renewed_in_time_is_kept_and_one_that_ran_out_is_lost(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hits, "LEASE_S", 0.6)
    connection = redis.Redis.from_url(redis_url)
    first, second = hits.Lease(connection, "hits:test:renew"), hits.Lease(connection, "hits:test:renew")
    assert first.acquire() and not second.acquire()
    key = first.lock.name
    began = time.monotonic()
    for _ in range(3):  # each keep() once the lease is under half its length renews it
        wait_for(lambda: connection.pttl(key) < 300, timeout_s=5, interval_s=0.01, message="half the lease to pass")
        first.keep()
        assert connection.pttl(key) > 450 and not second.acquire()
    assert time.monotonic() - began > 0.6  # held for longer than one lease
    # No renewal: the lease runs out, and another pass takes the account.
    wait_for(lambda: not connection.exists(key), timeout_s=5, interval_s=0.01, message="the lease to run out")
    assert second.acquire()
    with pytest.raises(hits.LeaseLost):
        first.keep()
    first.release()  # does not release the lease the other pass holds now
    assert not hits.Lease(connection, "hits:test:renew").acquire()
    second.release()
    assert hits.Lease(connection, "hits:test:renew").acquire()
