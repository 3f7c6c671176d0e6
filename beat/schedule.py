"""The beat schedule, in one table: task name -> how often."""

from __future__ import annotations

from typing import Any

from mephisto_dist import queue

POOL_RENEW_EVERY_S = 10.0
RUN_SWEEP_EVERY_S = 5.0

SCHEDULE: dict[str, dict[str, Any]] = {
    "renew-and-repair-concurrency-pools": {"task": queue.RECONCILE_POOLS, "schedule": POOL_RENEW_EVERY_S},
    "finish-and-unstall-runs": {"task": queue.RECONCILE_RUNS, "schedule": RUN_SWEEP_EVERY_S},
}
