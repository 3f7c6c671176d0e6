"""Remote procedure calls in the database and under Redis leases.

The web process records a call (:func:`record_call`) and enqueues it after the commit; a Celery worker
claims it (:func:`claim_call`, a compare-and-set that counts the run), holds a :class:`CallLease` while
the function runs, and settles it (:func:`settle_call`). A worker that dies stops renewing its lease; the
live sweep (:func:`orphaned_calls`) then sends the call round once more, or answers an error when it
already had its second run (``REMOTE_CALL_MAX_RUNS``) or ran its whole time limit (the worker's hard
time limit killed it: run again, it would only hold another worker as long).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist.blueprints.remote_procedure import RemoteRequest
from mephisto_dist.db.models import RemoteCall
from mephisto_dist.db.transitions import move_remote_call
from mephisto_dist.db.unique_rows import insert_ignoring_conflicts
from mephisto_dist.domain.status import REMOTE_CALL_MAX_RUNS, RemoteCallStatus
from mephisto_dist.limiter import keys

C = RemoteCallStatus
MAX_TARGET = 255
MAX_REQUEST_ID = 64


@dataclass(frozen=True)
class NewCall:
    run_id: int
    agent_id: str
    request_id: str
    target: str
    args_json: str


def record_call(session: Session, call: NewCall, *, now: datetime) -> tuple[int, bool]:
    """The call's row id, and whether this packet created it (a page resending a packet does not)."""
    created = insert_ignoring_conflicts(session, "remote_call", {
        "agent_id": call.agent_id, "task_run_id": call.run_id, "request_id": call.request_id[:MAX_REQUEST_ID],
        "target": call.target[:MAX_TARGET], "args_json": call.args_json, "status": C.PENDING.value,
        "attempts": 0, "created_at": now,
    })
    call_id = session.scalar(select(RemoteCall.id).where(RemoteCall.agent_id == call.agent_id,
                                                         RemoteCall.request_id == call.request_id[:MAX_REQUEST_ID]))
    if call_id is None:
        raise RuntimeError(f"remote call {call.request_id!r} vanished right after it was written")
    return int(call_id), created


def claim_call(session: Session, call_id: int, *, now: datetime) -> bool:
    """Take a pending call for this Celery run; False when it is running elsewhere or settled."""
    return move_remote_call(session, call_id, C.PENDING, C.RUNNING, attempts_plus_one=True, claimed_at=now)


def settle_call(session: Session, call_id: int, *, response_json: str, failed: bool, error: str | None,
                now: datetime) -> bool:
    new = C.FAILED if failed else C.ANSWERED
    return move_remote_call(session, call_id, C.RUNNING, new, response_json=response_json, error=error,
                            answered_at=now)


def fail_pending_call(session: Session, call_id: int, *, response_json: str, error: str, now: datetime) -> bool:
    return move_remote_call(session, call_id, C.PENDING, C.FAILED, response_json=response_json, error=error,
                            answered_at=now)


def requests_of(session: Session, agent_id: str) -> list[RemoteRequest]:
    """The agent's calls in Mephisto's shape, oldest first (answers included)."""
    rows = session.execute(select(RemoteCall.request_id, RemoteCall.target, RemoteCall.args_json,
                                  RemoteCall.response_json, RemoteCall.created_at)
                           .where(RemoteCall.agent_id == agent_id).order_by(RemoteCall.id))
    return [RemoteRequest(uuid=request_id, target=target, args_json=args_json, response_json=response_json,
                          timestamp=created_at.timestamp())
            for request_id, target, args_json, response_json, created_at in rows]


def settled_answers(session: Session, agent_id: str) -> list[tuple[str, str]]:
    """(request id, response JSON) of the agent's settled calls: what a returning page may have missed."""
    return [(request_id, response or "null") for request_id, response in session.execute(
        select(RemoteCall.request_id, RemoteCall.response_json).where(
            RemoteCall.agent_id == agent_id, RemoteCall.status.in_([C.ANSWERED.value, C.FAILED.value]))
        .order_by(RemoteCall.id))]


def calls_by_agent(session: Session, agent_ids: Sequence[str]) -> dict[str, list[dict[str, object]]]:
    """Every call of these agents as exported records, by agent."""
    found: dict[str, list[dict[str, object]]] = {}
    if not agent_ids:
        return found
    for row in session.scalars(select(RemoteCall).where(RemoteCall.agent_id.in_(list(agent_ids)))
                               .order_by(RemoteCall.id)):
        found.setdefault(row.agent_id, []).append({
            "request_id": row.request_id, "target": row.target, "args_json": row.args_json,
            "response_json": row.response_json, "status": row.status,
            "timestamp": row.created_at.timestamp(),
            "answered_at": row.answered_at.timestamp() if row.answered_at is not None else None,
        })
    return found


@dataclass(frozen=True)
class Orphan:
    call_id: int
    agent_id: str
    request_id: str
    target: str
    attempts: int
    claimed_at: datetime

    @property
    def has_run_left(self) -> bool:
        return self.attempts < REMOTE_CALL_MAX_RUNS

    def ran_out_of_time(self, limit_s: float, *, now: datetime) -> bool:
        """Whether its run lasted the call's time limit: stopped by it (or dead at its very end)."""
        return self.claimed_at <= now - timedelta(seconds=limit_s)


def orphaned_calls(session: Session, client: redis.Redis, *, lease_s: float, now: datetime) -> list[Orphan]:
    """Running calls claimed more than a lease ago whose lease is gone: their worker died."""
    rows = session.execute(select(RemoteCall.id, RemoteCall.agent_id, RemoteCall.request_id, RemoteCall.target,
                                  RemoteCall.attempts, RemoteCall.claimed_at)
                           .where(RemoteCall.status == C.RUNNING.value,
                                  RemoteCall.claimed_at < now - timedelta(seconds=lease_s))).all()
    if not rows:
        return []
    alive = client.pipeline(transaction=False)
    for row in rows:
        alive.exists(keys.remote_call_lease_key(row.id))
    held = alive.execute()
    return [Orphan(int(r.id), r.agent_id, r.request_id, r.target, int(r.attempts), r.claimed_at)
            for r, h in zip(rows, held, strict=True) if not h]


class CallLease:
    """Held while a worker runs a call: a Redis key renewed by a thread, gone soon after the process."""

    def __init__(self, client: redis.Redis, call_id: int, lease_s: float) -> None:
        self._client = client
        self._key = keys.remote_call_lease_key(call_id)
        self._lease_ms = max(1, int(lease_s * 1000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{call_id}", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self._lease_ms / 3000):
            try:
                self._client.set(self._key, "1", px=self._lease_ms)
            except redis.RedisError:
                continue  # a missed renewal is retried; a lapsed lease only costs a second run

    def __enter__(self) -> Self:
        self._client.set(self._key, "1", px=self._lease_ms)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._client.delete(self._key)


def requeue_call(session: Session, call_id: int) -> bool:
    """A running call whose worker died goes back to pending for one more run."""
    return move_remote_call(session, call_id, C.RUNNING, C.PENDING)
