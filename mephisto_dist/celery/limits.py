"""The time limit of every Celery task, in one table (``make_celery`` applies it).

At its soft limit Celery raises ``SoftTimeLimitExceeded`` inside the task (the prefork pool signals the
pool process); it unwinds like any error: the open transaction rolls back, Celery logs it, and what the
task held is found again by its sweep: a launch by its retry time (``reconcile_runs``), a provider call by
its stale claim (``resend_provider_calls``), a remote call by its lapsed lease (``live_sweep``). A remote
call answers its page at the soft limit (``runners.events.remote_call``). At the hard limit the pool
process is killed and replaced, and the message acknowledged, not re-delivered. Every hard limit stays
below the broker's visibility timeout (``queue.celery_config``) and below each ledger's staleness, so that
a stale claim means its holder is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from mephisto_dist import queue
from mephisto_dist.settings import Settings


@dataclass(frozen=True)
class TimeLimit:
    soft_s: float
    hard_s: float


# A task missing from the table (Celery's own) gets the app-wide default.
DEFAULT = TimeLimit(60.0, 90.0)
# Between a remote call's soft and hard limits: time to mark it failed and answer the page.
REMOTE_CALL_GRACE_S = 10.0


def time_limits(settings: Settings) -> dict[str, TimeLimit]:
    call_s = settings.remote_call_timeout_s
    stale_s = settings.provider_call_stale_s
    outbox_stale_s = settings.outbox_claim_stale_s
    return {
        # The task's own function; the page waits on it.
        queue.REMOTE_CALL: TimeLimit(call_s, call_s + REMOTE_CALL_GRACE_S),
        # Fired every few seconds: one that runs for long only delays the next.
        queue.LIVE_SWEEP: TimeLimit(30.0, 45.0),
        queue.RECONCILE_POOLS: TimeLimit(60.0, 90.0),
        queue.RESEND_PROVIDER_CALLS: TimeLimit(60.0, 90.0),
        # One TaskRunner event: the run's bundle (fetched on first use), the task's on_unit_submitted and
        # on_assignment_finished hooks (its own code), then a launch. Killed before db.outbox counts its
        # claim stale, so the sweep never runs an event a second time while the first still runs. A review
        # batch (``review.batches``) works for a slice of this and hands the rest to a message of its own.
        queue.OUTBOX_MESSAGE: TimeLimit(0.75 * outbox_stale_s, 0.9 * outbox_stale_s),
        queue.RESEND_OUTBOX: TimeLimit(60.0, 90.0),
        # Launches are paced to the provider's shared call rate (5/s): hundreds of units take minutes.
        queue.LAUNCH_UNITS: TimeLimit(600.0, 660.0),
        queue.RECONCILE_RUNS: TimeLimit(600.0, 660.0),
        # One provider call (boto3 retries included); the hard limit is below the time after which its claim
        # is taken for abandoned (MEPHISTO_DIST_PROVIDER_CALL_STALE_S), so a live call is never made twice.
        queue.PROVIDER_CALL: TimeLimit(min(120.0, 0.6 * stale_s), min(150.0, 0.8 * stale_s)),
        # One provider call per assigned unit of each marketplace run, paced.
        queue.HAND_BACK_RETURNED: TimeLimit(300.0, 330.0),
        # Architect calls: a few per server (describe, terminate) or per deploy (run an instance).
        queue.RECONCILE_SERVERS: TimeLimit(300.0, 330.0),
        queue.DEPLOY_SERVER: TimeLimit(300.0, 330.0),
        # Every page of every registered requester's HIT list, paced.
        queue.RECONCILE_HITS: TimeLimit(600.0, 660.0),
        # Every study of every registered study-based requester, with one call for each one's submissions.
        queue.RECONCILE_STUDIES: TimeLimit(600.0, 660.0),
    }


def celery_limits(settings: Settings) -> dict[str, object]:
    """The Celery settings that set them: app-wide defaults, and the table as per-task annotations."""
    return {
        "task_soft_time_limit": DEFAULT.soft_s,
        "task_time_limit": DEFAULT.hard_s,
        "task_annotations": {name: {"soft_time_limit": limit.soft_s, "time_limit": limit.hard_s}
                             for name, limit in time_limits(settings).items()},
    }
