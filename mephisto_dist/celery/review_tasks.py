"""Celery tasks for review side effects on the crowd provider: each carries out one ledger row
(``ProviderCall``) by id, at most once, however often it is delivered."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Task

from mephisto_dist import queue
from mephisto_dist.celery.tasks import app, runtime
from mephisto_dist.db.engine import transaction
from mephisto_dist.domain.launch import retry_delay_s
from mephisto_dist.errors import ServiceError
from mephisto_dist.review.decisions import CallInFlight, perform_call, unfinished_calls

log = logging.getLogger(__name__)

MAX_RETRIES = 8


@app.task(name=queue.PROVIDER_CALL, bind=True, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
def provider_call(self: Task[Any, Any], call_id: int) -> str:
    """Claim the ledger row, call the provider with its idempotency key, record the receipt. A row
    another process holds is retried once that claim could have gone stale; a provider failure is retried
    with backoff (the row went back to pending)."""
    try:
        settings = runtime().settings
        return perform_call(runtime().sessions, call_id, max_attempts=settings.provider_max_attempts,
                            stale_after_s=settings.provider_call_stale_s).value
    except CallInFlight as busy:
        raise self.retry(exc=busy, countdown=runtime().settings.provider_call_stale_s) from None
    except ServiceError as error:
        log.warning("provider call %s failed: %s", call_id, error)
        countdown = retry_delay_s(self.request.retries + 1, runtime().settings.provider_retry_base_s)
        raise self.retry(exc=error, countdown=countdown) from None


@app.task(name=queue.RESEND_PROVIDER_CALLS)  # type: ignore[untyped-decorator]
def resend_provider_calls() -> int:
    """Beat's sweep: re-enqueue provider calls whose enqueue failed or whose process died. A call
    already under way or done is not repeated (``perform_call`` claims its ledger row first)."""
    rt = runtime()
    with transaction(rt.sessions) as session:
        call_ids = unfinished_calls(session, now=datetime.now(UTC), retry_base_s=rt.settings.provider_retry_base_s,
                                    stale_after_s=rt.settings.provider_call_stale_s)
    for call_id in call_ids:
        rt.queue.enqueue(queue.PROVIDER_CALL, call_id)
    return len(call_ids)
