"""Crowd providers: where units are published and workers come from.

A provider is a :class:`CrowdProvider`; ``mock`` (``providers.mock``) publishes nothing and takes worker
and assignment from the page URL; ``mturk`` and ``mturk_sandbox`` (``providers.mturk``) drive Mechanical
Turk through boto3 behind this same contract.

Publishing is one unit per call (:meth:`CrowdProvider.publish_unit`), made by the launcher
(``mephisto_dist.runs.launches``) outside any database transaction, after it recorded the launch's intent and
through the shared rate bucket (``MEPHISTO_DIST_PROVIDER_CALLS_PER_S``); the launch id it passes is the
idempotency token. A crash between the call and its record is repaired by re-sending the same launch,
so a provider must answer a repeated token with the unit it already published (MTurk: CreateHIT's
``UniqueRequestToken``), never with a second one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mephisto_dist.errors import ConfigError


@dataclass(frozen=True)
class PublishedUnit:
    """A unit a provider made available, and its id there (the answer of a batch publish)."""

    unit_id: int
    provider_unit_id: str


@dataclass(frozen=True)
class UnitLaunch:
    """One attempt at making a unit available. ``launch_id`` is unique to this launch of this unit and is
    the provider's idempotency token: every re-send of the launch carries the same one."""

    run_id: int
    unit_id: int
    launch_id: str


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

    def publish_unit(self, launch: UnitLaunch, server_url: str, task_args: Mapping[str, Any]) -> str:
        """Make one unit available to workers and return the provider's id for it (a HIT id).

        Idempotent per ``launch.launch_id``: a re-sent launch returns the unit published the first time.
        A failure raises :class:`~mephisto_dist.errors.ProviderError` with the provider's own message.
        """
        ...

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        """Take units off the marketplace (expire HITs); idempotent."""
        ...

    def unpublish_launches(self, launches: Sequence[UnitLaunch]) -> None:
        """Take down whatever these launches may have published though no provider id was recorded for
        them (their sender died mid-call; find them by idempotency token). Idempotent; a launch that
        published nothing is no error."""
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
        from mephisto_dist.providers.mock import MockProvider

        return MockProvider.from_args(provider_args or {})
    if provider_type in ("mturk", "mturk_sandbox"):
        from mephisto_dist.providers.mturk import MTurkProvider

        return MTurkProvider(provider_type, provider_args)
    raise ConfigError(f"provider {provider_type!r} is not implemented yet (its arguments are accepted so the "
                      f"task config loads); implemented: {', '.join(PROVIDER_TYPES)}")
