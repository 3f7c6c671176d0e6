"""Each run's units per status over time, kept by the app between refreshes: deriving it reads every unit
of the run (about a second for 10,000), so it is derived once, then again on a thread of its own when the
run's units changed (their count or last status change), while the pages show the last one derived. A
run's plot is therefore at most one derivation behind its table."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from mephisto_dist.domain.unit_history import StatusHistory, StatusSteps
from mephisto_dist.runs.status import unit_history_mark, unit_status_steps
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

RUNS_KEPT = 32
"""Runs whose history is kept; the one unused longest is dropped first."""


@dataclass
class _Kept:
    mark: tuple[int, datetime | None]
    steps: StatusSteps
    deriving: bool = False


class HistoryCache:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._kept: dict[int, _Kept] = {}

    def history(self, run_id: int, *, now: datetime) -> StatusHistory:
        mark = unit_history_mark(self.runtime, run_id)
        with self._lock:
            kept = self._kept.pop(run_id, None)
            if kept is not None:
                self._kept[run_id] = kept  # the most recently used last
                if kept.mark != mark and not kept.deriving:
                    kept.deriving = True
                    threading.Thread(target=self._derive, args=(run_id, mark), daemon=True,
                                     name=f"history-{run_id}").start()
                return kept.steps.sample(now=now)
        steps = unit_status_steps(self.runtime, run_id)
        self._keep(run_id, _Kept(mark, steps))
        return steps.sample(now=now)

    def _derive(self, run_id: int, mark: tuple[int, datetime | None]) -> None:
        try:
            self._keep(run_id, _Kept(mark, unit_status_steps(self.runtime, run_id)))
        except Exception:
            log.exception("review app: deriving run %s's units over time failed", run_id)
            with self._lock:
                if run_id in self._kept:
                    self._kept[run_id].deriving = False

    def _keep(self, run_id: int, kept: _Kept) -> None:
        with self._lock:
            self._kept.pop(run_id, None)
            self._kept[run_id] = kept
            while len(self._kept) > RUNS_KEPT:
                del self._kept[next(iter(self._kept))]
