"""Sending the provider calls a decision recorded (approve, reject, bonus, block): to the Celery workers,
or made in this process when no Redis is configured (the embedded default has no worker between runs).
Either way the ledger row was committed first, so a call that cannot go now waits for ``review resend``."""

from __future__ import annotations

from collections.abc import Sequence

from mephisto_dist.errors import ServiceError
from mephisto_dist.queue import PROVIDER_CALL
from mephisto_dist.review.decisions import CallInFlight, perform_call
from mephisto_dist.runtime import Runtime

RESEND_HINT = "retry with `mephisto-dist review resend`"


def send_calls(runtime: Runtime, call_ids: Sequence[int]) -> list[str]:
    """Send the calls; what went wrong, one sentence each (empty when all went)."""
    if not call_ids:
        return []
    if runtime.settings.embedded_redis:
        said: list[str] = []
        failed = 0
        for call_id in call_ids:
            try:
                perform_call(runtime.sessions, call_id, max_attempts=runtime.settings.provider_max_attempts)
            except CallInFlight:
                continue  # another process is making it
            except ServiceError as error:
                failed += 1
                said.append(str(error))
        if failed:
            said.append(f"{failed} provider call(s) failed and stay pending: the decisions are saved; {RESEND_HINT}")
        return said
    for sent, call_id in enumerate(call_ids):
        try:
            runtime.queue.enqueue(PROVIDER_CALL, call_id)
        except ServiceError as error:
            return [(f"the decisions are saved but {len(call_ids) - sent} provider call(s) could not be queued "
                    f"({error}); {RESEND_HINT}")]
    return []
