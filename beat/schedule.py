"""The beat schedule, in one table: task name -> how often (from Settings)."""

from __future__ import annotations

from typing import Any

from mephisto_dist import queue
from mephisto_dist.settings import Settings

PROVIDER_CALL_SWEEP_EVERY_S = 60.0
# One provider call per assigned unit of a marketplace run: rare enough to stay far below the call rate.
RETURNED_HIT_SWEEP_EVERY_S = 60.0


def make_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "renew-and-repair-concurrency-pools": {"task": queue.RECONCILE_POOLS,
                                               "schedule": settings.pool_renew_every_s},
        "finish-and-unstall-runs": {"task": queue.RECONCILE_RUNS, "schedule": settings.run_sweep_every_s},
        "disconnect-silent-pages-and-recover-calls": {"task": queue.LIVE_SWEEP,
                                                      "schedule": settings.live_sweep_every_s},
        "resend-outbox-messages": {"task": queue.RESEND_OUTBOX, "schedule": settings.outbox_sweep_every_s},
        "resend-unfinished-provider-calls": {"task": queue.RESEND_PROVIDER_CALLS,
                                             "schedule": PROVIDER_CALL_SWEEP_EVERY_S},
        "hand-back-returned-hits": {"task": queue.HAND_BACK_RETURNED, "schedule": RETURNED_HIT_SWEEP_EVERY_S},
        "stop-orphaned-servers": {"task": queue.RECONCILE_SERVERS, "schedule": settings.reconcile_every_s},
        "expire-orphaned-hits": {"task": queue.RECONCILE_HITS, "schedule": settings.reconcile_every_s},
    }
