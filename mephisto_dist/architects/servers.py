"""The server table's writes: a record before a server starts, its heartbeats, and its end. Statuses
move through ``db.transitions.move_server``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from mephisto_dist.db.models import Server, TaskRun
from mephisto_dist.db.transitions import move_server
from mephisto_dist.domain.servers import SERVER_LIVE, ServerStatus


@dataclass(frozen=True)
class NewServer:
    task_run_id: int | None
    architect: str
    host: str
    address: str | None
    pid: int | None = None
    instance_id: str | None = None


def record_server(session: Session, new: NewServer, *, now: datetime) -> int:
    """Record a server as ``deploying``: called before it is started, so that no crash can orphan it."""
    server = Server(task_run_id=new.task_run_id, architect=new.architect, host=new.host, address=new.address,
                    pid=new.pid, instance_id=new.instance_id, status=ServerStatus.DEPLOYING.value,
                    created_at=now, status_changed_at=now)
    session.add(server)
    session.flush()
    return server.id


def should_stop(session: Session, server_id: int, *, now: datetime, grace_s: float) -> str | None:
    """Why the server must stop (its record is marked stopping or stopped, or its run has been over for
    ``grace_s``: the last worker's page has had its answer), or None."""
    server = session.get(Server, server_id)
    if server is None:
        return "its record is gone"
    if ServerStatus(server.status) not in SERVER_LIVE:
        return f"its record is marked {server.status}"
    if server.task_run_id is None:
        return None
    run = session.get(TaskRun, server.task_run_id)
    if run is None:
        return f"its run {server.task_run_id} no longer exists"
    if run.is_completed and (run.completed_at is None or run.completed_at <= now - timedelta(seconds=grace_s)):
        return f"its run {run.id} has ended"
    return None


def heartbeat(session: Session, server_id: int, *, now: datetime) -> None:
    """The server answers: stamp it, and mark it running if it was deploying or flagged lost."""
    session.connection().execute(update(Server).where(Server.id == server_id).values(heartbeat_at=now))
    move_server(session, server_id, [ServerStatus.DEPLOYING, ServerStatus.LOST], ServerStatus.RUNNING, now=now)


def mark_stopped(session: Session, server_id: int, note: str, *, now: datetime) -> bool:
    return move_server(session, server_id, [*SERVER_LIVE, ServerStatus.STOPPING], ServerStatus.STOPPED,
                       now=now, note=note)


def ask_to_stop(session: Session, server_id: int, note: str, *, now: datetime) -> bool:
    return move_server(session, server_id, list(SERVER_LIVE), ServerStatus.STOPPING, now=now, note=note)
