"""The beat schedule, in one table: task name -> how often (from Settings), and how long a sent round may
wait for a worker before it is dropped.

Each entry is a sweep: a round does all the work due, so rounds queued behind a worker outage are
worthless, and thousands of them would stand in front of launches. A round therefore expires after its
period (``options.expires``: the worker discards it unrun), never less than ``MIN_EXPIRES_S``: the
expiry is a time stamp of beat's clock read by the worker's, and a round must outlive a small skew
between machines and the wait for a busy worker, or every round of a short period could be dropped.
"""

from __future__ import annotations

from typing import Any

from mephisto_dist import queue
from mephisto_dist.settings import Settings

# One provider call per assigned unit of a marketplace run: rare enough to stay far below the call rate.
RETURNED_HIT_SWEEP_EVERY_S = 60.0
MIN_EXPIRES_S = 5.0


def make_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    every_s = {
        "renew-and-repair-concurrency-pools": (queue.RECONCILE_POOLS, settings.pool_renew_every_s),
        "finish-and-unstall-runs": (queue.RECONCILE_RUNS, settings.run_sweep_every_s),
        "disconnect-silent-pages-and-recover-calls": (queue.LIVE_SWEEP, settings.live_sweep_every_s),
        "resend-outbox-messages": (queue.RESEND_OUTBOX, settings.outbox_sweep_every_s),
        "resend-unfinished-provider-calls": (queue.RESEND_PROVIDER_CALLS, settings.provider_call_sweep_every_s),
        "hand-back-returned-hits": (queue.HAND_BACK_RETURNED, RETURNED_HIT_SWEEP_EVERY_S),
        "stop-orphaned-servers": (queue.RECONCILE_SERVERS, settings.reconcile_every_s),
        "expire-orphaned-hits": (queue.RECONCILE_HITS, settings.reconcile_every_s),
        "stop-orphaned-studies-and-keep-their-places": (queue.RECONCILE_STUDIES, settings.reconcile_every_s),
    }
    return {entry: {"task": task, "schedule": period_s, "options": {"expires": expires_s(period_s)}}
            for entry, (task, period_s) in every_s.items()}


def expires_s(period_s: float) -> float:
    """How long a round sent every ``period_s`` may wait in the queue."""
    return max(period_s, MIN_EXPIRES_S)


def sweep_tasks(settings: Settings) -> set[str]:
    """The task names beat fires."""
    return {entry["task"] for entry in make_schedule(settings).values()}
