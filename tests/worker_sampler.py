"""A sampler process for the per-worker limits: reads, about 100 times a second, the most units one
worker of a run holds ``assigned`` and the most it holds assigned or submitted, appending
``<monotonic s> <most assigned> <most assigned or submitted>`` lines to a file until it is terminated.

    python -m tests.worker_sampler DATABASE_URL RUN_ID OUT_FILE
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import func, select

from mephisto_dist.db.engine import make_engine, make_sessionmaker, read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.domain.status import UNIT_SUBMITTED, UnitStatus

INTERVAL_S = 0.01


def most_per_worker(run_id: int, statuses: list[str]):  # type: ignore[no-untyped-def]
    per_worker = (select(func.count().label("n")).select_from(Unit)
                  .where(Unit.task_run_id == run_id, Unit.status.in_(statuses), Unit.worker_id.is_not(None))
                  .group_by(Unit.worker_id).subquery())
    return select(func.coalesce(func.max(per_worker.c.n), 0))


def main(database_url: str, run_id: int, out: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    assigned = most_per_worker(run_id, [UnitStatus.ASSIGNED.value])
    taken = most_per_worker(run_id, [UnitStatus.ASSIGNED.value, *(s.value for s in UNIT_SUBMITTED)])
    with open(out, "a", buffering=1, encoding="utf-8") as samples:
        while True:
            started = time.monotonic()
            with read_transaction(sessions) as session:
                row = (int(session.scalar(assigned) or 0), int(session.scalar(taken) or 0))
            samples.write(f"{started:.4f} {row[0]} {row[1]}\n")
            time.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
