"""What ``status`` and ``reconciled`` show of the deployment: Celery workers and beat by their heartbeats
in Redis, the recorded servers, and what the reconcilers found and did."""

from __future__ import annotations

from datetime import datetime

from mephisto_dist.cli.console import console
from mephisto_dist.domain.diagnosis import ProcessFacts, ago
from mephisto_dist.reconcile.records import recent_findings
from mephisto_dist.reconcile.unreceived import waiting_review_by_provider
from mephisto_dist.runs.status import processes, servers
from mephisto_dist.runtime import Runtime

SHOWN_WORKERS = 5


def print_processes(runtime: Runtime) -> ProcessFacts:
    """One line for the workers and one for beat, with how long since each was last seen; returns the
    facts so that the caller can fold them into its diagnosis."""
    seen = processes(runtime)
    facts, workers, beats = seen.facts, seen.workers, seen.beats
    if facts.worker_ages_s is None:
        if runtime.settings.embedded_redis:
            console.print("Redis, Celery worker, beat: not running (on the embedded default they run inside an "
                          "attached `mephisto-dist run` or `resume`, and none is running now)", soft_wrap=True)
        else:
            console.print("workers, beat: ? (Redis does not answer)")
        return facts
    stale = facts.stale_after_s
    alive = [s for s in workers if s.age_s <= stale]
    listed = ", ".join(f"{s.name} {ago(s.age_s)} ago" for s in workers[:SHOWN_WORKERS])
    queued = "" if facts.queued is None else f"; {facts.queued} task(s) waiting in the queue"
    console.print(f"celery workers: {len(alive)} answering" + (f" (last seen: {listed})" if listed else "") + queued,
                  soft_wrap=True)
    beat_line = f"{beats[0].name}, last seen {ago(beats[0].age_s)} ago" if beats else "never seen"
    running = "running" if beats and beats[0].age_s <= stale else "NOT running"
    console.print(f"beat: {running} ({beat_line})", soft_wrap=True)
    return facts


def print_servers(runtime: Runtime, task_run_id: int | None, *, now: datetime) -> None:
    """The recorded servers (of one run, or every one not stopped) with their last heartbeat."""
    stale_s = runtime.settings.heartbeat_stale_s
    for server in servers(runtime, task_run_id):
        age_s = None if server.heartbeat_at is None else (now - server.heartbeat_at).total_seconds()
        seen = "never beat" if age_s is None else f"last heartbeat {ago(age_s)} ago"
        where = server.instance_id or (f"pid {server.pid}" if server.pid else "")
        run = "" if task_run_id is not None else f"run {server.task_run_id or '(any on its port)'}, "
        note = f"; {server.note}" if server.note and not server.running else ""
        shown = server.status
        if server.running and server.run_ended:
            shown = "gone with its run (recorded running; the run has ended)"
        elif server.running and (age_s is None or age_s > stale_s):
            shown = "not answering (recorded running, but its heartbeats stopped)"
        console.print(f"server {server.server_id}: {shown} ({run}{server.architect} "
                      f"{server.address or '?'} {where} on {server.host}, {seen}{note})", soft_wrap=True)
        if server.lost:
            console.print(f"[bold]→[/] server {server.server_id} of a live run stopped answering; "
                          + ("beat redeploys it when its instance is gone" if server.redeployed_by_beat
                             else "start its web process again"), soft_wrap=True)


def print_reconciled(runtime: Runtime, task_run_id: int | None, *, limit: int) -> int:
    """What beat's reconcilers found and did, newest first; returns how many lines."""
    rows = recent_findings(runtime.sessions, task_run_id=task_run_id, limit=limit)
    for row in rows:
        state = ("done" if row.done_at is not None else
                 f"FAILED: {row.error}" if row.error else "in progress")
        console.print(f"{row.created_at:%Y-%m-%d %H:%M:%S} {row.reconciler}: {row.subject}: {row.found} "
                      f"-> {row.action} ({state})", soft_wrap=True, highlight=False)
    return len(rows)


def print_unreceived(runtime: Runtime, task_run_id: int | None) -> None:
    """Submissions the provider holds that never reached us, waiting for a researcher's review."""
    from mephisto_dist.providers import provider_class

    for provider_type, waiting in sorted(waiting_review_by_provider(runtime.sessions, task_run_id).items()):
        if provider_class(provider_type).is_hit_based:
            console.print(f"[bold]→[/] {waiting} assignment(s) submitted on MTurk never reached us; they are "
                          f"recorded with MTurk's answer and need review (mephisto-dist hits unreceived)",
                          soft_wrap=True)
        else:
            console.print(f"[bold]→[/] {waiting} submission(s) completed on {provider_type} never reached us; "
                          f"they are recorded and need review (mephisto-dist hits unreceived)", soft_wrap=True)
