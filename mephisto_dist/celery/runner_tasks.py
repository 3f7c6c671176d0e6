"""Celery tasks of the live TaskRunner events: a page's remote call, and the live sweep beat fires.

Both are short (a call holds its worker only while the task's function runs, at most its time limit:
``mephisto_dist.celery.limits``) and idempotent; see ``mephisto_dist.runners.events``.
"""

from __future__ import annotations

from mephisto_dist import queue
from mephisto_dist.celery.tasks import app, runtime
from mephisto_dist.runners import events


@app.task(name=queue.REMOTE_CALL)  # type: ignore[untyped-decorator]
def remote_call(call_id: int) -> str | None:
    """Run a page's remote procedure call and answer the page (through whichever web process holds it)."""
    return events.remote_call(runtime(), call_id)


@app.task(name=queue.LIVE_SWEEP)  # type: ignore[untyped-decorator]
def live_sweep() -> dict[str, int]:
    """Disconnect silent pages (their units go back to the pool) and recover calls whose worker died."""
    return events.live_sweep(runtime())
