"""The lease of a running assignment (``L:assignment:<id>:runner``, see ``limiter.keys``): set by the runner
worker before the assignment starts, renewed by a thread while ``run_assignment`` runs, and left as
``ended:<unix time>`` once it returned (its agents may still be ``in task``, submitting from their pages,
until the run's ``submission_timeout`` from that time). A key missing while agents of the assignment are
``in task`` means the process hosting it died (SIGKILL, a lost machine): the live sweep ends the assignment
(``runners.assignments.recovery``), as it times out the agents that did not submit in time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import redis

from mephisto_dist.limiter import keys

RUNNER_LEASE_S = 3.0
"""How long a runner's lease outlives its last renewal (renewed every third of it)."""
RUNNING = "running"
ENDED = "ended"
ENDED_TTL_S = 24 * 60 * 60


class RunnerLease:
    def __init__(self, client: redis.Redis, assignment_id: int, lease_s: float = RUNNER_LEASE_S) -> None:
        self._client = client
        self._key = keys.assignment_runner_lease(assignment_id)
        self._lease_ms = max(1, int(lease_s * 1000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"runner-lease-{assignment_id}", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self._lease_ms / 3000):
            try:
                self._client.set(self._key, RUNNING, px=self._lease_ms)
            except redis.RedisError:
                continue  # retried; a lease that lapses meanwhile ends the assignment, as a dead process would

    def __enter__(self) -> Self:
        self._client.set(self._key, RUNNING, px=self._lease_ms)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._client.set(self._key, ended_value(datetime.now(UTC)), ex=ENDED_TTL_S)


def ended_value(at: datetime) -> str:
    return f"{ENDED}:{at.timestamp():.3f}"


def ended_at(value: bytes | str | None) -> datetime | None:
    """When the runner whose lease holds ``value`` returned; None while it runs, when the key is missing, or
    for an ``ended`` written without its time."""
    text = value.decode() if isinstance(value, bytes) else value
    if text is None or not text.startswith(f"{ENDED}:"):
        return None
    try:
        return datetime.fromtimestamp(float(text.split(":", 1)[1]), UTC)
    except ValueError:
        return None
