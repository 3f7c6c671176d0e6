"""Crowd providers: where units are published and workers come from.

A provider is a :class:`CrowdProvider`; ``mock`` publishes nothing and takes worker and assignment from
the page URL; ``mturk`` and ``mturk_sandbox`` (``providers.mturk``) drive Mechanical Turk through boto3
behind this same contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mephisto_dist.errors import ConfigError


@dataclass(frozen=True)
class PublishedUnit:
    unit_id: int
    provider_unit_id: str


@dataclass(frozen=True)
class SubmittedWork:
    """One worker's submission as the provider knows it: the worker, the published unit (HIT) and the
    provider's own data about the agent (on MTurk its ``assignment_id``)."""

    worker_name: str
    provider_unit_id: str | None
    provider_data: Mapping[str, Any]


class CrowdProvider(Protocol):
    provider_type: str
    # Publishing costs no remote call (mock): the web server may refill a freed slot itself, at once.
    publishes_instantly: bool

    def publish_units(
        self, run_id: int, unit_ids: Sequence[int], server_url: str, task_args: Mapping[str, Any]
    ) -> list[PublishedUnit]:
        """Make units available to workers; idempotent for units already published."""
        ...

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        """Take units off the marketplace (expire HITs); idempotent."""
        ...

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        """The URL a worker opens, where the provider has such a thing (mock); else None."""
        ...

    # Review side effects. Each takes the ledger's idempotency key and passes it on where the provider
    # accepts one (MTurk's ``UniqueRequestToken``), and returns a receipt to record.

    def approve_work(self, work: SubmittedWork, *, idempotency_key: str) -> str:
        """Pay for a submission (approval, and soft rejection: the work is paid but not welcome again)."""
        ...

    def reject_work(self, work: SubmittedWork, reason: str, *, idempotency_key: str) -> str:
        """Refuse to pay for a submission, telling the worker why."""
        ...

    def pay_bonus(self, work: SubmittedWork, amount: float, reason: str, *, idempotency_key: str) -> str:
        """Pay ``amount`` dollars on top of a submission; never twice for one key."""
        ...

    def block_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        """Keep a worker from every task of this requester."""
        ...

    def unblock_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        ...


class MockProvider:
    """Publishes nothing: a worker opens ``<server>/?worker_id=W&assignment_id=A`` directly."""

    provider_type = "mock"
    publishes_instantly = True

    def publish_units(
        self, run_id: int, unit_ids: Sequence[int], server_url: str, task_args: Mapping[str, Any]
    ) -> list[PublishedUnit]:
        return [PublishedUnit(unit_id, f"mock-{run_id}-{unit_id}") for unit_id in unit_ids]

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
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


PROVIDER_TYPES = ("mock", "mturk", "mturk_sandbox")

STATIC_DIR = Path(__file__).with_name("static")


def wrap_crowd_source(provider_type: str) -> Path:
    """The provider's ``wrap_crowd_source.js``: the globals Mephisto's front-end packages call
    (``getWorkerName``, ``getAssignmentId``, ``getAgentRegistration``, ``handleSubmitToProvider``)."""
    # The sandbox is MTurk with other endpoints: its pages are the same.
    path = STATIC_DIR / f"{'mturk' if provider_type == 'mturk_sandbox' else provider_type}_wrap_crowd_source.js"
    if not path.is_file():
        raise ConfigError(f"provider {provider_type!r} has no wrap_crowd_source.js")
    return path


def make_provider(provider_type: str, provider_args: Mapping[str, Any] | None = None) -> CrowdProvider:
    """The provider of a run, from its stored ``mephisto.provider`` arguments. Building one makes no
    remote call (MTurk's client is built on first use)."""
    if provider_type == "mock":
        return MockProvider()
    if provider_type in ("mturk", "mturk_sandbox"):
        from mephisto_dist.providers.mturk import MTurkProvider

        return MTurkProvider(provider_type, provider_args)
    raise ConfigError(f"provider {provider_type!r} is not implemented yet (its arguments are accepted so the "
                      f"task config loads); implemented: {', '.join(PROVIDER_TYPES)}")
