"""Pure decisions, tested without a clock: when a run stops itself, and what ``status`` says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mephisto_dist.domain.diagnosis import RunFacts, diagnose
from mephisto_dist.runs.lifecycle import RunTiming, stop_reason

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = RunTiming(assignment_duration_s=600, task_lifetime_s=3600, no_submission_patience_s=900)


@pytest.mark.parametrize(("created_ago_s", "activity_ago_s", "expected"), [
    (100, 100, None),
    (3600, 10, "task_lifetime_in_seconds (3600 s) ran out"),
    (1000, 900, "no submission for no_submission_patience (900 s)"),
    (1000, 899, None),
])
def test_stop_reason(created_ago_s: int, activity_ago_s: int, expected: str | None) -> None:
    now = T0 + timedelta(hours=5)
    reason = stop_reason(TIMING, created_at=now - timedelta(seconds=created_ago_s),
                         last_activity_at=now - timedelta(seconds=activity_ago_s), now=now)
    assert reason == expected


def facts(**changes: object) -> RunFacts:
    base: dict[str, object] = {
        "is_completed": False, "shutdown_reason": None, "created": 0, "launched": 3, "assigned": 2, "cap": 0,
        "held": 5, "oldest_assigned_at": None, "server_url": "http://localhost:3000", "server_answers": True}
    base.update(changes)
    return RunFacts(**base)  # type: ignore[arg-type]


def test_a_healthy_run_has_nothing_to_say() -> None:
    assert diagnose(facts(), now=T0) == []


def test_a_cap_held_by_assigned_units_is_named_with_the_oldest_age() -> None:
    said = diagnose(facts(created=10, launched=0, assigned=5, cap=5, held=5,
                          oldest_assigned_at=T0 - timedelta(minutes=41)), now=T0)
    assert "no unit launched: the cap of 5 is held by 5 assigned units, oldest assigned 41 min ago" in said


def test_a_silent_server_and_an_empty_provider_are_named() -> None:
    said = diagnose(facts(launched=0, assigned=2, server_answers=False, run_id=7), now=T0)
    silent = next(s for s in said if s.startswith("the server at http://localhost:3000 does not answer"))
    assert "`mephisto-dist resume 7`" in silent and "`mephisto-dist web --run 7`" in silent, silent
    assert any(s.startswith("the provider hosts 0 available units") for s in said)


def test_redis_down_and_waiting_units() -> None:
    said = diagnose(facts(created=4, launched=0, assigned=0, held=None), now=T0)
    assert any("Redis does not answer" in s for s in said)
    assert "4 unit(s) wait to launch" in said


def test_an_embedded_run_left_by_its_command_leads_to_resume_or_shutdown() -> None:
    """Embedded Redis not answering means no attached command serves the run: say that, and the way on,
    not a list of broken services."""
    said = diagnose(facts(held=None, server_answers=False, embedded=True, run_id=4, open_units=3), now=T0)
    assert said == [
        ("no `mephisto-dist run` is serving task run 4 now (its command was stopped or its terminal closed): "
        "the server, Redis, the Celery worker and beat went with it"),
        ("`mephisto-dist resume 4` starts them again and carries on (completed work is kept), or "
        "`mephisto-dist shutdown 4` ends the run (3 unit(s) not submitted would expire)")]
    stopping = diagnose(facts(held=None, embedded=True, run_id=4, shutdown_reason="stopped"), now=T0)
    assert stopping[-1] == ("`mephisto-dist resume 4` lets the units in flight be finished, or "
                            "`mephisto-dist shutdown 4 --force` ends the run now")
    # A deployment's Redis not answering is an outage, said as one.
    assert any("Redis does not answer" in s for s in diagnose(facts(held=None, run_id=4), now=T0))


def test_stopping_and_complete_runs() -> None:
    assert diagnose(facts(is_completed=True), now=T0) == ["the run is complete"]
    said = diagnose(facts(shutdown_reason="stopped by the researcher (Ctrl-C)"), now=T0)
    assert said[0] == "the run is stopping (stopped by the researcher (Ctrl-C)); waiting on 2 unit(s) in flight"


def test_process_diagnosis_names_a_missing_worker_and_beat() -> None:
    from mephisto_dist.domain.diagnosis import ProcessFacts, diagnose_processes, workers_answer

    running = ProcessFacts(worker_ages_s=[2.0, 50.0], beat_ages_s=[1.0], stale_after_s=30)
    assert diagnose_processes(running) == [] and workers_answer(running) is True
    never = ProcessFacts(worker_ages_s=[], beat_ages_s=[], stale_after_s=30)
    said = diagnose_processes(never)
    assert "no Celery worker has been seen" in said[0] and "beat is not running (never seen)" in said[1]
    assert workers_answer(never) is False
    gone = ProcessFacts(worker_ages_s=[400.0], beat_ages_s=[7300.0], stale_after_s=30)
    said = diagnose_processes(gone)
    assert "last one was seen 6 min ago" in said[0] and "last seen 2 h 1 min ago" in said[1]
    assert diagnose_processes(ProcessFacts(None, None, 30)) == []


def test_process_diagnosis_asks_about_a_queue_no_worker_takes_from() -> None:
    from mephisto_dist.domain.diagnosis import QUEUE_BACKLOG, ProcessFacts, diagnose_processes

    def said(queued: int | None, worker_age_s: float = 2.0) -> list[str]:
        return diagnose_processes(ProcessFacts([worker_age_s], [1.0], 30, queued=queued))

    assert said(None) == [] and said(QUEUE_BACKLOG - 1) == []
    expected = (f"{QUEUE_BACKLOG} tasks wait in the queue although a Celery worker answers: if the number grows "
                "from one `status` to the next, the workers take nothing (a worker can stop taking tasks after Redis "
                "went away and came back); restart them")
    assert said(QUEUE_BACKLOG) == [expected]
    # No worker answers: that is what is said, not the queue.
    assert "no Celery worker answers" in said(500, worker_age_s=400.0)[0] and len(said(500, worker_age_s=400.0)) == 1
