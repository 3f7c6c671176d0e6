"""The deployment's processes for ``status``: Celery workers and beat by their heartbeats in Redis."""

from __future__ import annotations

from mephisto_dist import heartbeats
from mephisto_dist.cli.console import console
from mephisto_dist.domain.diagnosis import ProcessFacts, ago
from mephisto_dist.errors import ServiceError
from mephisto_dist.runtime import Runtime

SHOWN_WORKERS = 5


def process_facts(runtime: Runtime) -> tuple[ProcessFacts, list[heartbeats.Seen], list[heartbeats.Seen]]:
    try:
        workers = heartbeats.last_seen(runtime.redis, "worker")
        beats = heartbeats.last_seen(runtime.redis, "beat")
    except ServiceError:
        return ProcessFacts(None, None, runtime.settings.heartbeat_stale_s), [], []
    facts = ProcessFacts([s.age_s for s in workers], [s.age_s for s in beats], runtime.settings.heartbeat_stale_s)
    return facts, workers, beats


def print_processes(runtime: Runtime) -> ProcessFacts:
    """One line for the workers and one for beat, with how long since each was last seen; returns the
    facts so that the caller can fold them into its diagnosis."""
    facts, workers, beats = process_facts(runtime)
    if facts.worker_ages_s is None:
        console.print("workers, beat: ? (Redis does not answer)")
        return facts
    stale = facts.stale_after_s
    alive = [s for s in workers if s.age_s <= stale]
    listed = ", ".join(f"{s.name} {ago(s.age_s)} ago" for s in workers[:SHOWN_WORKERS])
    console.print(f"celery workers: {len(alive)} answering" + (f" (last seen: {listed})" if listed else ""),
                  soft_wrap=True)
    beat_line = f"{beats[0].name}, last seen {ago(beats[0].age_s)} ago" if beats else "never seen"
    running = "running" if beats and beats[0].age_s <= stale else "NOT running"
    console.print(f"beat: {running} ({beat_line})", soft_wrap=True)
    return facts

