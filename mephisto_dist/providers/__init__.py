"""Crowd providers: where units are published and workers come from.

A provider is a :class:`CrowdProvider`; ``mock`` (``providers.mock``) publishes nothing and takes worker
and assignment from the page URL, as ``inhouse`` (``providers.inhouse``) does for a lab's own annotators
with Mephisto's inhouse URL; ``mturk`` and ``mturk_sandbox`` (``providers.mturk``) drive Mechanical
Turk through boto3, and ``prolific`` (``providers.prolific``) runs a Prolific study through its API, behind
this same contract.

Publishing is one unit per call (:meth:`CrowdProvider.publish_unit`), made by the launcher
(``mephisto_dist.runs.launches``) outside any database transaction, after it recorded the launch's intent and
through the shared rate bucket (``MEPHISTO_DIST_PROVIDER_CALLS_PER_S``); the launch id it passes is the
idempotency token. A crash between the call and its record is repaired by re-sending the same launch,
so a provider must answer a repeated token with the unit it already published (MTurk: CreateHIT's
``UniqueRequestToken``), never with a second one.

What differs between providers is declared by each implementation as a capability of the contract
(``is_marketplace``, ``is_sandbox``, ``is_hit_based``, ``is_study_based``, ``syncs_qualifications``,
``publishes_instantly``, ``overrides_rejections``); a study-based provider also implements
:class:`RunsStudies`, what beat's study reconciler and ``hits outstanding`` ask of it,
and implementations are found by name in one registry (:func:`provider_class`): nothing outside this
package compares a provider's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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
    """The name a task config chooses it by (``/mephisto/provider: NAME``)."""
    is_marketplace: bool
    """Workers come from a remote marketplace, reached with a registered requester's credentials (MTurk);
    False for a stand-in crowd with nothing to reach (mock)."""
    is_sandbox: bool
    """No real money moves: a marketplace's test version, or a stand-in crowd."""
    is_hit_based: bool
    """Each unit is published as its own HIT, which the worker's page names (``hit_id``): a worker is given
    that HIT's unit, and beat hands back the units of HITs nobody holds any more."""
    is_study_based: bool
    """A run is one study on the provider whose places grow as units are launched (Prolific): beat stops the
    studies of finished runs, keeps their places in line with the units waiting, records submissions that
    never reached us and hands back the units of participants who gave up (:class:`RunsStudies`)."""
    syncs_qualifications: bool
    """The provider keeps its own copy of workers' qualifications, which every grant and revoke is sent to."""
    publishes_instantly: bool
    """Publishing costs no remote call (mock): the web server may refill a freed slot itself, at once."""
    overrides_rejections: bool
    """A rejected submission can still be approved (and paid) on the provider (MTurk's OverrideRejection);
    False where a rejection is final (Prolific)."""
    fee_rate: float
    """What the provider charges on top of every reward and bonus paid, as a fraction (MTurk: 0.20)."""

    @classmethod
    def from_args(cls, provider_args: Mapping[str, Any]) -> CrowdProvider:
        """The provider of a run, from its stored ``mephisto.provider`` arguments; makes no remote call."""
        ...

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


@runtime_checkable
class ChecksAccount(Protocol):
    """A marketplace provider that can say whether its account answers (``requesters``)."""

    def account_check(self) -> str:
        """What the account says about itself (MTurk: its balance); raises the provider's error if it
        cannot be reached or refuses the keys."""
        ...


@dataclass(frozen=True)
class ListedStudy:
    """A study as a study-based provider lists it. ``deployment`` and ``run_id`` come from our mark (None:
    another tool made it)."""

    study_id: str
    name: str
    status: str
    total_places: int
    places_taken: int
    deployment: str | None
    run_id: int | None
    created_at: datetime | None = None


@dataclass(frozen=True)
class StudySubmission:
    """One participant's submission to a study, as the provider holds it."""

    submission_id: str
    participant_id: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None


@runtime_checkable
class RunsStudies(Protocol):
    """What beat's study reconciler, ``hits outstanding`` and ``cleanup`` ask of a study-based provider (one
    registered requester's account). Every call may raise the provider's error."""

    @property
    def deployment(self) -> str: ...

    def list_studies(self) -> list[ListedStudy]:
        """Every study of the account (ours and others')."""
        ...

    def study_submissions(self, study_id: str) -> list[StudySubmission]:
        ...

    def add_places(self, study_id: str, count: int) -> None:
        """Add ``count`` places (re-activating a study that went to review when its last place was taken)."""
        ...

    def stop_study(self, study_id: str) -> None:
        """Stop the study taking participants; those at work may still finish. Idempotent."""
        ...


STATIC_DIR = Path(__file__).with_name("static")


def wrap_crowd_source(provider_type: str) -> Path:
    """The provider's ``wrap_crowd_source.js``: the globals Mephisto's front-end packages call
    (``getWorkerName``, ``getAssignmentId``, ``getAgentRegistration``, ``handleSubmitToProvider``)."""
    # The sandbox is MTurk with other endpoints: its pages are the same.
    path = STATIC_DIR / f"{'mturk' if provider_type == 'mturk_sandbox' else provider_type}_wrap_crowd_source.js"
    if not path.is_file():
        raise ConfigError(f"provider {provider_type!r} has no wrap_crowd_source.js")
    return path


_IMPLEMENTED: dict[str, str] = {
    "mock": "mephisto_dist.providers.mock:MockProvider",
    "mturk": "mephisto_dist.providers.mturk.provider:MTurkProvider",
    "mturk_sandbox": "mephisto_dist.providers.mturk.provider:MTurkSandboxProvider",
    "prolific": "mephisto_dist.providers.prolific.provider:ProlificProvider",
    "inhouse": "mephisto_dist.providers.inhouse:InhouseProvider",
}
"""Every implemented provider by name, and where it lives: the one place a provider is added. Each is
imported when first asked for, so a run on one provider does not load the others' clients (httpx,
boto3)."""


@cache
def _load(provider_type: str) -> type[CrowdProvider]:
    module, name = _IMPLEMENTED[provider_type].split(":")
    cls: type[CrowdProvider] = getattr(importlib.import_module(module), name)
    return cls


def provider_types(where: Callable[[type[CrowdProvider]], bool] | None = None) -> tuple[str, ...]:
    """The names of the implemented providers (those with a capability, given ``where``)."""
    return tuple(name for name in _IMPLEMENTED if where is None or where(_load(name)))


def provider_class(provider_type: str) -> type[CrowdProvider]:
    """The implementation of ``provider_type``: its capabilities, without building one."""
    if provider_type not in _IMPLEMENTED:
        raise ConfigError(f"provider {provider_type!r} is not implemented yet (its arguments are accepted so the "
                          f"task config loads); implemented: {', '.join(provider_types())}")
    return _load(provider_type)


def make_provider(provider_type: str, provider_args: Mapping[str, Any] | None = None) -> CrowdProvider:
    """The provider of a run, from its stored ``mephisto.provider`` arguments. Building one makes no
    remote call (MTurk's client is built on first use)."""
    return provider_class(provider_type).from_args(provider_args or {})
