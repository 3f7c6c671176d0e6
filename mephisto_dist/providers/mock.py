"""The ``mock`` provider: a local stand-in crowd. Workers are whoever opens the task URL with a
``worker_id``; publishing makes no remote call.

For rehearsing what a remote marketplace does to a run, three arguments make it behave like one:
``publish_latency_s`` (each publish takes this long and counts as a remote call: it goes through the
shared rate bucket, and a freed slot is refilled by a Celery task instead of the web process),
``publish_log`` (a file each publish call appends ``<unit id> <launch id>`` to, before its latency, so
a process killed mid-call leaves the trace a marketplace would) and ``fault=publish`` (every publish fails
with the provider's message, as a marketplace refusing the HIT would).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mephisto_dist.errors import ConfigError, ProviderError
from mephisto_dist.providers import SubmittedWork, UnitLaunch

FAULTS = ("", "publish")
PUBLISH_REFUSED = "mock fault: the marketplace refused to publish this unit"


class MockProvider:
    """Publishes nothing: a worker opens ``<server>/?worker_id=W&assignment_id=A`` directly."""

    provider_type = "mock"
    is_marketplace = False
    is_sandbox = True
    fee_rate = 0.0
    overrides_rejections = True
    is_hit_based = False
    is_study_based = False
    syncs_qualifications = False
    publishes_instantly = True
    publish_latency_s = 0.0
    publish_log: str | None = None
    fault = ""

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> MockProvider:
        provider = cls()
        try:
            latency_s = float(args.get("publish_latency_s") or 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"mephisto.provider.publish_latency_s={args.get('publish_latency_s')!r} "
                              "is not a number") from None
        if latency_s < 0:
            raise ConfigError("mephisto.provider.publish_latency_s must not be negative")
        fault = str(args.get("fault") or "")
        if fault not in FAULTS:
            raise ConfigError(f"mephisto.provider.fault={fault!r} is not one of: none, "
                              f"{', '.join(f for f in FAULTS if f)}")
        provider.publish_latency_s = latency_s
        provider.publishes_instantly = latency_s == 0 and not fault
        provider.publish_log = str(args.get("publish_log") or "") or None
        provider.fault = fault
        return provider

    def publish_unit(self, launch: UnitLaunch, server_url: str, task_args: Mapping[str, Any]) -> str:
        if self.publish_log:
            # One write() on an O_APPEND file: lines from several processes never interleave.
            fd = os.open(self.publish_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{launch.unit_id} {launch.launch_id}\n".encode())
            finally:
                os.close(fd)
        if self.fault == "publish":
            raise ProviderError(PUBLISH_REFUSED)
        if self.publish_latency_s:
            time.sleep(self.publish_latency_s)  # the answer in transit: a process killed now never hears it
        # Derived from the launch id alone, as a marketplace deduplicating by token answers a re-send.
        return f"mock-{launch.launch_id}"

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        return None

    def unpublish_launches(self, launches: Sequence[UnitLaunch]) -> None:
        return None

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        return f"{server_url.rstrip('/')}/?worker_id={worker_name}&assignment_id={assignment_ref}"

    # Nothing to pay or block: the ledger row that asked for the call is the record of it.

    def approve_work(self, work: SubmittedWork, *, idempotency_key: str) -> str:
        return f"mock:{idempotency_key}"

    def reject_work(self, work: SubmittedWork, reason: str, *, idempotency_key: str) -> str:
        return f"mock:{idempotency_key}"

    def pay_bonus(self, work: SubmittedWork, amount: float, reason: str, *, idempotency_key: str) -> str:
        return f"mock:{idempotency_key}"

    def block_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        return f"mock:{idempotency_key}"

    def unblock_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        return f"mock:{idempotency_key}"
