"""Giving back tokens whose release nobody waits for, in batches, on one thread per process.

A unit submitted on a run with no cap frees no slot anyone waits for: its run has no pool, and the tokens
it may hold are copies another process put there for a figure (beat's recount of the deployment pool, a
cap's recount of the run's pool) and the worker's assigned slot of a run without ``allowed_concurrent``.
They must still be given back, but the submission's answer need not wait for Redis: one Redis round trip
per submission was an eighth of a web process's CPU per unit on an uncapped run (issue 23). Units queued
here are given back by one thread, everything queued meanwhile in one call (``release_unit_tokens``),
moments after the commit that moved them, as before.

What this changes is only when: a token is given back a few milliseconds after the answer rather than
before it. A process that dies with units still queued leaves their tokens where a process dying between
its commit and its release always left them, to beat's repair (it removes the tokens of units that no
longer count). A release that fails (Redis down) is logged and left to the same repair, as a failed
release in the request was.

Never for a release someone waits on: a capped run's slot (its next unit is launched at once), a
deployment-wide cap, a worker's ``allowed_concurrent`` slot (their next request must find it free).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Final

from mephisto_dist.errors import ServiceError
from mephisto_dist.limiter import Limiter
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens

log = logging.getLogger(__name__)

MAX_BATCH: Final = 512
"""Units given back in one call at most (one Lua script run: Redis serves nobody else meanwhile)."""
GATHER_S: Final = 0.05
"""How long the thread lets releases gather after the first one it sees: at a few hundred submissions a
second, tens of units per call rather than one (a call as soon as one is queued saves the request's wait,
not the CPU)."""


class DeferredReleases:
    """Units whose tokens are given back by this object's thread, started on first use."""

    def __init__(self, limiter: Limiter, name: str = "token-releases") -> None:
        self._limiter = limiter
        self._name = name
        self._queue: queue.SimpleQueue[UnitTokens | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, units: Iterable[UnitTokens]) -> None:
        """Queue the units' releases (after the commit that moved them, as ``release_unit_tokens``). After
        ``close`` they are given back at once, on the caller's thread."""
        units = list(units)
        if not units:
            return
        if self._closed:
            self._release(units)
            return
        for unit in units:
            self._queue.put(unit)
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                    self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Give back everything queued, then stop the thread (a web process stopping)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("token releases still queued after %.0f s: beat's repair gives them back", timeout_s)

    def _serve(self) -> None:
        stopping = False  # close() queued its mark: give back what is left, without waiting for more
        while True:
            if stopping:
                try:
                    first = self._queue.get_nowait()
                except queue.Empty:
                    return
            else:
                first = self._queue.get()
                if first is not None:
                    time.sleep(GATHER_S)
            batch = [] if first is None else [first]
            stopping = stopping or first is None
            while len(batch) < MAX_BATCH:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    stopping = True
                else:
                    batch.append(unit)
            if batch:
                self._release(batch)

    def _release(self, units: list[UnitTokens]) -> None:
        try:
            release_unit_tokens(self._limiter, units)
        except ServiceError as error:
            log.warning("tokens of %d submitted unit(s) not given back now (%s): beat's repair will",
                        len(units), error)
        except Exception:  # this thread must outlive any one batch
            log.exception("giving back the tokens of %d unit(s) failed: beat's repair will", len(units))
