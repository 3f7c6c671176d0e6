"""Celery tasks for review side effects on the crowd provider: each carries out one ledger row
(``ProviderCall``) by id, at most once, however often it is delivered."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from mephisto_dist import queue
from mephisto_dist.errors import ServiceError
from mephisto_dist.review import CLAIM_STALE_AFTER_S, CallInFlight, perform_call
from workers.tasks import app, runtime

log = logging.getLogger(__name__)

MAX_RETRIES = 8
RETRY_BACKOFF_MAX_S = 600


@app.task(name=queue.PROVIDER_CALL, bind=True, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
def provider_call(self: Task[Any, Any], call_id: int) -> str:
    """Claim the ledger row, call the provider with its idempotency key, record the receipt. A row
    another process holds is retried once that claim could have gone stale; a provider failure is retried
    with backoff (the row went back to pending)."""
    try:
        return perform_call(runtime().sessions, call_id).value
    except CallInFlight as busy:
        raise self.retry(exc=busy, countdown=CLAIM_STALE_AFTER_S) from None
    except ServiceError as error:
        log.warning("provider call %s failed: %s", call_id, error)
        countdown = min(RETRY_BACKOFF_MAX_S, 10 * 2 ** self.request.retries)
        raise self.retry(exc=error, countdown=countdown) from None
