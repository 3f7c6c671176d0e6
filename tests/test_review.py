"""Review decisions and their provider side effects, on real SQLite and PostgreSQL: the status moves, the
UnitReview rows, two reviewers racing, the ledger paying a bonus once however often its task is delivered
(in-process and through a real Celery worker), and the ``review`` command driven through a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, ProviderCall, TaskRun, Unit, UnitReview
from mephisto_dist.errors import NotFoundError, ServiceError
from mephisto_dist.providers import SubmittedWork
from mephisto_dist.providers.mock import MockProvider
from mephisto_dist.queue import PROVIDER_CALL, CeleryQueue
from mephisto_dist.review.decisions import (
    AlreadyDecided,
    CallInFlight,
    CallStatus,
    Decision,
    NotReviewable,
    ReviewError,
    decide,
    failed_calls,
    perform_call,
    reset_failed_calls,
    unfinished_calls,
)
from mephisto_dist.settings import load_settings
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration, RunContext
from tests.conftest import wait_for
from tests.factories import make_run, now
from tests.system import celery_worker

ROOT = Path(__file__).resolve().parent.parent
NOT_FOUND = 4


# -- helpers shared with test_qualifications ---------------------------------------------------------


def completed_units(factory: sessionmaker[Session], per_worker: Mapping[str, int],
                    task_name: str = "review-task") -> tuple[RunContext, dict[str, list[int]]]:
    """A run where each named worker submitted that many units (one per assignment)."""
    run = make_run(factory, assignments=max(per_worker.values()), units_per_assignment=len(per_worker),
                   task_name=task_name)
    units: dict[str, list[int]] = {}
    for worker, count in per_worker.items():
        for n in range(count):
            reg = Registration.from_request({"provider_data": {
                "worker_name": worker, "agent_registration_id": f"hit{n}-{worker}",
                "assignment_id": f"hit{n}", "provider_type": "mock"}})
            with transaction(factory) as session:
                details = claims.register_agent(session, run, reg, now=now())
                assert details.agent_id is not None
                claims.submit_task(session, run, details.agent_id, {"answer": f"{worker}-{n}"}, now=now())
                assert details.unit_id is not None
                units.setdefault(worker, []).append(details.unit_id)
    return run, units


def run_cli(tmp_path: Path, database_url: str, *args: str, stdin: str | None = None,
            redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "MEPHISTO_DIST_DATABASE_URL": database_url,
                "COLUMNS": "250"})
    if redis_url is not None:
        env["MEPHISTO_DIST_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, cwd=ROOT, check=False,
                          input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def statuses(factory: sessionmaker[Session], unit_ids: Sequence[int]) -> list[tuple[str, str]]:
    """(unit status, agent status) per unit, in the order given."""
    with transaction(factory) as session:
        units = {u: s for u, s in session.execute(select(Unit.id, Unit.status).where(Unit.id.in_(unit_ids)))}
        agents_ = {u: s for u, s in session.execute(select(Agent.unit_id, Agent.status)
                                                    .where(Agent.unit_id.in_(unit_ids)))}
    return [(units[u], agents_[u]) for u in unit_ids]


def calls(factory: sessionmaker[Session], **where: Any) -> list[ProviderCall]:
    with transaction(factory) as session:
        return list(session.scalars(select(ProviderCall).filter_by(**where).order_by(ProviderCall.id)))


def reviews(factory: sessionmaker[Session], unit_id: int) -> list[UnitReview]:
    with transaction(factory) as session:
        return list(session.scalars(select(UnitReview).where(UnitReview.unit_id == unit_id)
                                    .order_by(UnitReview.id)))


# -- decisions ---------------------------------------------------------------------------------------


def test_approve_accepts_the_unit_approves_the_agent_and_records_the_review(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run, units = completed_units(factory, {"alice": 1})
    unit_id = units["alice"][0]
    with transaction(factory) as session:
        reviewed = decide(session, unit_id, Decision.APPROVE, now=now(), note="nice")
    assert statuses(factory, [unit_id]) == [("accepted", "approved")]
    [review] = reviews(factory, unit_id)
    assert (review.status, review.note, review.bonus, review.task_run_id) == ("accepted", "nice", None, run.run_id)
    assert review.worker_id == reviewed.worker_id and review.created_at is not None
    [call] = calls(factory, unit_id=unit_id)
    assert (call.action, call.idempotency_key, call.status) == ("approve", f"approve:{unit_id}", "pending")
    assert call.payload["worker_name"] == "alice" and call.payload["provider_data"]["assignment_id"] == "hit0"


def test_reject_needs_a_reason_and_keeps_it(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"bob": 1})
    unit_id = units["bob"][0]
    with pytest.raises(ReviewError, match="needs a reason"), transaction(factory) as session:
        decide(session, unit_id, Decision.REJECT, now=now())
    assert statuses(factory, [unit_id]) == [("completed", "completed")]
    with transaction(factory) as session:
        decide(session, unit_id, Decision.REJECT, now=now(), note="answered at random")
    assert statuses(factory, [unit_id]) == [("rejected", "rejected")]
    assert [r.note for r in reviews(factory, unit_id)] == ["answered at random"]
    assert [c.idempotency_key for c in calls(factory, unit_id=unit_id)] == [f"reject:{unit_id}"]


def test_soft_reject_pays_but_marks_the_work(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"carol": 1})
    unit_id = units["carol"][0]
    with transaction(factory) as session:
        decide(session, unit_id, Decision.SOFT_REJECT, now=now())
    assert statuses(factory, [unit_id]) == [("soft_rejected", "soft_rejected")]
    assert [c.action for c in calls(factory, unit_id=unit_id)] == ["approve"]  # soft rejection pays
    with pytest.raises(NotReviewable, match=f"unit {unit_id} is soft_rejected"), \
            transaction(factory) as session:
        decide(session, unit_id, Decision.APPROVE, now=now())


def test_a_later_approval_overrides_a_rejection(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"dave": 1})
    unit_id = units["dave"][0]
    with transaction(factory) as session:
        decide(session, unit_id, Decision.REJECT, now=now(), note="looked wrong")
    with pytest.raises(NotReviewable, match="only completed units"), transaction(factory) as session:
        decide(session, unit_id, Decision.SOFT_REJECT, now=now())
    with transaction(factory) as session:
        decide(session, unit_id, Decision.APPROVE, now=now(), note="it was right after all")
    assert statuses(factory, [unit_id]) == [("accepted", "approved")]
    assert [r.status for r in reviews(factory, unit_id)] == ["rejected", "accepted"]
    assert [c.idempotency_key for c in calls(factory, unit_id=unit_id)] == [f"reject:{unit_id}",
                                                                           f"approve:{unit_id}"]


def test_units_not_reviewable_are_named_with_their_status(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    with transaction(factory) as session:
        launched = session.scalars(select(Unit.id).where(Unit.task_run_id == run.run_id)).one()
    with pytest.raises(NotReviewable, match=f"unit {launched} is launched"), transaction(factory) as session:
        decide(session, launched, Decision.APPROVE, now=now())
    with pytest.raises(NotFoundError, match="unit 999999 does not exist"), transaction(factory) as session:
        decide(session, 999999, Decision.APPROVE, now=now())


def test_two_reviewers_deciding_one_unit_at_once_exactly_one_wins(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"erin": 1})
    unit_id = units["erin"][0]
    decisions = [Decision.APPROVE, Decision.REJECT, Decision.SOFT_REJECT, Decision.APPROVE] * 2
    barrier = threading.Barrier(len(decisions))
    won: list[Decision] = []
    told: list[str] = []

    def reviewer(decision: Decision) -> None:
        barrier.wait()
        try:
            with transaction(factory) as session:
                decide(session, unit_id, decision, now=now(), note="r")
            won.append(decision)
        except (AlreadyDecided, NotReviewable) as error:
            told.append(str(error))

    threads = [threading.Thread(target=reviewer, args=(d,)) for d in decisions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1 and len(told) == len(decisions) - 1, (won, told)
    assert all(f"unit {unit_id}" in message for message in told)
    expected = {Decision.APPROVE: ("accepted", "approved"), Decision.REJECT: ("rejected", "rejected"),
                Decision.SOFT_REJECT: ("soft_rejected", "soft_rejected")}[won[0]]
    assert statuses(factory, [unit_id]) == [expected]
    assert len(reviews(factory, unit_id)) == 1 and len(calls(factory, unit_id=unit_id)) == 1


# -- the provider-call ledger ------------------------------------------------------------------------


def test_a_bonus_call_made_twice_pays_once(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"frank": 1})
    unit_id = units["frank"][0]
    with transaction(factory) as session:
        reviewed = decide(session, unit_id, Decision.APPROVE, now=now(), note="great notes", bonus=0.75)
    [approve_id, bonus_id] = reviewed.call_ids
    assert perform_call(factory, bonus_id) == CallStatus.DONE
    assert perform_call(factory, bonus_id) == CallStatus.DONE  # the second delivery finds it done
    [bonus] = calls(factory, action="bonus")
    review_id = reviewed.review_id
    assert (bonus.idempotency_key, bonus.amount, bonus.attempts) == (f"bonus:{unit_id}:{review_id}", 0.75, 1)
    assert bonus.receipt == f"mock:bonus:{unit_id}:{review_id}" and bonus.done_at is not None
    assert reviews(factory, unit_id)[0].bonus_paid_at is not None
    assert calls(factory, id=approve_id)[0].status == "pending"  # its own task has not run yet


class _FlakyProvider(MockProvider):
    def __init__(self) -> None:
        self.bonus_keys: list[str] = []
        self.fail = True

    def pay_bonus(self, work: SubmittedWork, amount: float, reason: str, *, idempotency_key: str) -> str:
        self.bonus_keys.append(idempotency_key)
        if self.fail:
            raise ConnectionError("throttled")
        return "paid"


def test_a_failed_call_goes_back_to_pending_and_a_retry_reuses_its_key(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"gina": 1})
    with transaction(factory) as session:
        reviewed = decide(session, units["gina"][0], Decision.APPROVE, now=now(), note="x", bonus=1.0)
    bonus_id = reviewed.call_ids[1]
    provider = _FlakyProvider()
    with pytest.raises(ServiceError, match="throttled"):
        perform_call(factory, bonus_id, provider_for=lambda _type, _args: provider)
    [row] = calls(factory, id=bonus_id)
    assert (row.status, row.attempts) == ("pending", 1) and "throttled" in (row.last_error or "")
    provider.fail = False
    assert perform_call(factory, bonus_id, provider_for=lambda _type, _args: provider) == CallStatus.DONE
    assert len(set(provider.bonus_keys)) == 1 and len(provider.bonus_keys) == 2  # one token, both tries


def test_a_call_failing_every_attempt_is_failed_after_exactly_that_many_and_resend_starts_afresh(
        engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"ida": 1})
    with transaction(factory) as session:
        bonus_id = decide(session, units["ida"][0], Decision.APPROVE, now=now(), note="x", bonus=1.0).call_ids[1]
    provider = _FlakyProvider()

    def attempt() -> CallStatus:
        return perform_call(factory, bonus_id, provider_for=lambda _type, _args: provider, max_attempts=3)

    for tries in (1, 2):
        with pytest.raises(ServiceError, match="throttled"):
            attempt()
        with transaction(factory) as session:
            # The sweep re-sends it only once its backoff has passed (0 s here: at once).
            assert bonus_id in unfinished_calls(session, now=now(), retry_base_s=0.0)
            assert bonus_id not in unfinished_calls(session, now=now(), retry_base_s=3600.0), tries
    assert attempt() == CallStatus.FAILED
    assert attempt() == CallStatus.FAILED  # a late re-delivery sends nothing
    assert len(provider.bonus_keys) == 3
    [row] = calls(factory, id=bonus_id)
    assert (row.status, row.attempts) == ("failed", 3) and "throttled" in (row.last_error or "")
    with transaction(factory) as session:
        assert bonus_id not in unfinished_calls(session, now=now())  # beat leaves it to the researcher
        assert failed_calls(session, row.task_run_id)[0] == 1
        assert reset_failed_calls(session, None) == [bonus_id]  # review resend
    provider.fail = False
    assert attempt() == CallStatus.DONE
    assert len(provider.bonus_keys) == 4 and len(set(provider.bonus_keys)) == 1


def test_a_claimed_call_is_left_alone_until_the_claim_goes_stale(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"hank": 1})
    with transaction(factory) as session:
        call_id = decide(session, units["hank"][0], Decision.APPROVE, now=now()).call_ids[0]
    with transaction(factory) as session:  # a process claimed it, then died before finishing
        session.execute(update(ProviderCall).where(ProviderCall.id == call_id)
                        .values(status="claimed", claimed_at=now(), attempts=1))
    with pytest.raises(CallInFlight):
        perform_call(factory, call_id)
    assert perform_call(factory, call_id, stale_after_s=0) == CallStatus.DONE
    assert calls(factory, id=call_id)[0].attempts == 2


@pytest.mark.system
def test_a_bonus_task_delivered_twice_to_real_workers_pays_once(
    tmp_path: Path, engine: Engine, database_url: str, redis_url: str,
) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"iris": 1})
    with transaction(factory) as session:
        reviewed = decide(session, units["iris"][0], Decision.APPROVE, now=now(), note="bonus!", bonus=2.5)
    bonus_id = reviewed.call_ids[1]
    settings = load_settings({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"),
                              "MEPHISTO_DIST_DATABASE_URL": database_url, "MEPHISTO_DIST_REDIS_URL": redis_url})
    log = tmp_path / "worker.log"
    queue = CeleryQueue(settings.broker_url)
    try:
        with celery_worker(settings, log, concurrency=2):
            queue.enqueue(PROVIDER_CALL, bonus_id)
            queue.enqueue(PROVIDER_CALL, bonus_id)
            wait_for(lambda: calls(factory, id=bonus_id)[0].status == "done", timeout_s=30,
                     message="the bonus call to be done")
            # Both deliveries finished: one paid, the other found it done (or in flight, and retries later).
            wait_for(lambda: log.read_text().count(f"{PROVIDER_CALL}[") >= 4, timeout_s=30,
                     message="both deliveries to finish")
    finally:
        queue.close()
    [bonus] = calls(factory, action="bonus")
    assert (bonus.status, bonus.attempts, bonus.amount) == ("done", 1, 2.5), log.read_text()
    assert reviews(factory, units["iris"][0])[0].bonus_paid_at is not None


# -- the review command ------------------------------------------------------------------------------


@pytest.mark.system
def test_review_approve_with_a_bonus_run_twice_pays_once(tmp_path: Path, engine: Engine,
                                                         database_url: str) -> None:
    factory = make_sessionmaker(engine)
    _, units = completed_units(factory, {"jack": 2})
    unit_id = str(units["jack"][0])
    first = run_cli(tmp_path, database_url, "review", "approve", unit_id, "--bonus", "1.50", "--reason", "thanks")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "accepted: 1 unit(s)" in first.stdout
    again = run_cli(tmp_path, database_url, "review", "approve", unit_id, "--bonus", "1.50", "--reason", "thanks")
    assert_refused(again, f"unit {unit_id} is accepted")
    # No Redis configured: the command made the calls itself, once.
    assert [(c.action, c.status, c.attempts) for c in calls(factory)] == [("approve", "done", 1),
                                                                         ("bonus", "done", 1)]
    assert statuses(factory, units["jack"]) == [("accepted", "approved"), ("completed", "completed")]
    # The decision says who made it: the login of the user who typed the command.
    with transaction(factory) as session:
        (by,) = session.scalars(select(UnitReview.decided_by).where(UnitReview.unit_id == int(unit_id)))
    assert by is not None and by.startswith("cli:") and len(by) > 4


@pytest.mark.system
def test_review_commands_refuse_bad_input_and_change_nothing(tmp_path: Path, engine: Engine,
                                                             database_url: str) -> None:
    factory = make_sessionmaker(engine)
    run, units = completed_units(factory, {"kate": 2})
    good = str(units["kate"][0])
    assert_refused(run_cli(tmp_path, database_url, "review", "reject", good), "needs a reason")
    assert_refused(run_cli(tmp_path, database_url, "review", "approve", good, "424242"),
                   "unit 424242 does not exist", code=NOT_FOUND)
    assert_refused(run_cli(tmp_path, database_url, "review", "approve", good, "x1"), "'x1' is not a number")
    assert_refused(run_cli(tmp_path, database_url, "review", "approve", good, "--bonus", "-2", "--reason", "r"),
                   "bonus '-2'")
    assert run_cli(tmp_path, database_url, "review", "soft-reject", good, "--bonus", "1").returncode == 2
    assert_refused(run_cli(tmp_path, database_url, "review", "approve", "--all-completed", "--run", "999"),
                   "task run 999 does not exist", code=NOT_FOUND)
    assert_refused(run_cli(tmp_path, database_url, "review", "--task-name", "ghost"), "no task named 'ghost'",
                   code=NOT_FOUND)
    assert statuses(factory, units["kate"]) == [("completed", "completed")] * 2
    assert calls(factory) == []
    done = run_cli(tmp_path, database_url, "review", "soft-reject", "--all-completed", "--run", str(run.run_id))
    assert done.returncode == 0, done.stderr
    assert statuses(factory, units["kate"]) == [("soft_rejected", "soft_rejected")] * 2


@pytest.mark.system
def test_interactive_review_approves_all_of_a_workers_units(tmp_path: Path, engine: Engine,
                                                            database_url: str) -> None:
    factory = make_sessionmaker(engine)
    run, units = completed_units(factory, {"liam": 2, "mia": 1})
    with transaction(factory) as session:  # a tip liam left while working (submit_metadata)
        session.execute(update(Agent).where(Agent.unit_id == units["liam"][0]).values(task_metadata={
            "tips": [{"id": "t1", "header": "Tip", "text": "read it twice", "accepted": False}]}))
    # liam: approve, for all his remaining units; mia: reject with a reason.
    answers = "a\nall\nr\ncopied the example\n"
    result = run_cli(tmp_path, database_url, "review", "--task-name", "review-task", stdin=answers)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tips and feedback:" in result.stdout and '"text": "read it twice"' in result.stdout
    assert "worker liam" in result.stdout and '"answer": "liam-0"' in result.stdout
    assert '"text": "item 0"' in result.stdout  # inputs are shown
    assert "3 unit(s) decided" in result.stdout
    assert statuses(factory, units["liam"]) == [("accepted", "approved")] * 2
    assert statuses(factory, units["mia"]) == [("rejected", "rejected")]
    assert reviews(factory, units["mia"][0])[0].note == "copied the example"
    with transaction(factory) as session:
        assert session.get(TaskRun, run.run_id) is not None
    # Nothing left to review: a second pass says so and asks nothing.
    again = run_cli(tmp_path, database_url, "review", "--run", str(run.run_id))
    assert again.returncode == 0 and "no completed units to review" in again.stdout


@pytest.mark.system
def test_interactive_review_shows_each_call_that_failed_every_attempt_and_how_to_resend_it(
        tmp_path: Path, engine: Engine, database_url: str) -> None:
    factory = make_sessionmaker(engine)
    run, units = completed_units(factory, {"nora": 1, "olga": 1})
    with transaction(factory) as session:
        bonus_id = decide(session, units["nora"][0], Decision.APPROVE, now=now(), note="x", bonus=1.0).call_ids[1]
    provider = _FlakyProvider()
    assert perform_call(factory, bonus_id, provider_for=lambda _type, _args: provider,
                        max_attempts=1) == CallStatus.FAILED
    result = run_cli(tmp_path, database_url, "review", "--run", str(run.run_id), stdin="q\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 unit launch(es) and 1 provider call(s) failed every attempt" in result.stdout, result.stdout
    assert (f"bonus of worker nora for unit {units['nora'][0]} (run {run.run_id}), 1 attempt(s): "
            in result.stdout), result.stdout
    assert "throttled" in result.stdout
    assert f"send them again: mephisto-dist review resend --run {run.run_id}" in result.stdout
    assert "1 completed unit(s) from 1 worker(s) to review" in result.stdout  # olga's, then the review goes on
