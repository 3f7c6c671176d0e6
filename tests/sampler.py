"""A sampler process: reads one run's ``launched + assigned`` count from the database and its pool's
live tokens from Redis about 100 times a second, appending ``<monotonic s> <active> <held>`` lines to a
file until it is terminated. A process of its own, so the test's HTTP clients cannot slow it down.

    python -m tests.sampler DATABASE_URL REDIS_URL RUN_ID OUT_FILE
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import func, select

from mephisto_dist.db.engine import make_engine, make_sessionmaker, read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.domain.status import UNIT_ACTIVE
from mephisto_dist.limiter.redis_pool import RedisLimiter
from mephisto_dist.runs.launches import run_pool

INTERVAL_S = 0.01


def main(database_url: str, redis_url: str, run_id: int, out: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    limiter = RedisLimiter.from_url(redis_url)
    query = select(func.count()).select_from(Unit).where(
        Unit.task_run_id == run_id, Unit.status.in_([s.value for s in UNIT_ACTIVE]))
    with open(out, "a", buffering=1, encoding="utf-8") as samples:
        while True:
            started = time.monotonic()
            with read_transaction(sessions) as session:
                active = int(session.scalar(query) or 0)
            held = limiter.held(run_pool(run_id))
            samples.write(f"{started:.4f} {active} {held}\n")
            time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
