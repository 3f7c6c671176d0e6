"""The requester accounts runs launch under: registering one (its keys saved as an AWS profile for a
marketplace), saying what a registration again changed, listing them, and removing one no open run uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import ConfigError, NotAllowed
from mephisto_dist.providers import provider_class, provider_types
from mephisto_dist.providers.requesters import (
    Keep,
    RegisteredRequester,
    delete_keys,
    find_requesters,
    has_keys,
    keys_file,
    keys_required,
    list_requesters,
    register,
    requester_row,
    save_keys,
)


@dataclass(frozen=True)
class Registration:
    """What ``register`` did."""

    marketplace: bool
    profile: str | None
    """The name its keys are kept under (an AWS profile, or the Prolific credentials file's entry;
    ``None``: the standard AWS environment)."""
    keys_saved_to: Path | None
    """The shared credentials file the keys were written to, when keys were given."""
    changes: tuple[str, ...] = ()
    """What registering again changed or kept of a marketplace requester, one sentence each."""
    endpoint: str | None = None
    """The endpoint it is reached at when not the provider's own."""
    credentials: str = ""
    """Where its keys are, in words."""


def register_requester(factory: sessionmaker[Session], provider_type: str, name: str, *,
                       keys: Mapping[str, str] | None, endpoint_url: str | Literal[Keep.ENDPOINT] | None,
                       now: datetime) -> Registration:
    """Register (or re-register) a requester. A marketplace's ``keys`` (MTurk's access key id and secret,
    Prolific's api_key) are kept under ``name`` in its provider's credentials file; without keys it uses
    the keys kept under that name if there are any, else (MTurk) the AWS environment.
    ``Keep.ENDPOINT`` keeps the endpoint registered before; ``None`` is the provider's own."""
    profile: str | None = None
    saved: Path | None = None
    marketplace = provider_type in provider_types(lambda cls: cls.is_marketplace)
    if marketplace:
        if keys is not None:
            saved = save_keys(provider_type, name, keys)
            profile = name
        elif has_keys(provider_type, name):
            profile = name
        elif keys_required(provider_type):
            raise ConfigError(f"requester {name!r}: no {provider_type} API key is kept under that name; give it: "
                              f"mephisto-dist register {provider_type} name={name} api_key=...")
    with transaction(factory) as session:
        before = next((r for r in find_requesters(session, name, removed=True) if r.provider_type == provider_type),
                      None)
        after = register(session, provider_type, name, aws_profile=profile, endpoint_url=endpoint_url, now=now)
    said = registration_changes(before, after, endpoint_kept=endpoint_url is Keep.ENDPOINT) if marketplace else ()
    return Registration(marketplace, profile, saved, said, after.endpoint_url, after.credentials())


def _credentials(requester: RegisteredRequester) -> str:
    return requester.credentials()


def _endpoint(requester: RegisteredRequester) -> str:
    shown = requester.endpoint
    return shown if requester.endpoint_url else f"{shown} (the provider's own)"


def registration_changes(before: RegisteredRequester | None, after: RegisteredRequester, *,
                         endpoint_kept: bool) -> tuple[str, ...]:
    """What registering ``after`` again changed of ``before``, said so that a move (to the real marketplace
    above all) is never silent."""
    if before is None:
        return ()
    name = f"requester {after.requester_name!r}"
    said = [f"{name} had been removed; it is registered again"] if before.removed_at is not None else []
    if before.endpoint_url != after.endpoint_url:
        said.append(f"{name}: endpoint changed from {_endpoint(before)} to {_endpoint(after)}")
    elif endpoint_kept and after.endpoint_url:
        said.append(f"{name}: keeping endpoint {after.endpoint_url} (endpoint_url= with no URL: the provider's own)")
    if before.aws_profile != after.aws_profile:
        said.append(f"{name}: credentials changed from {_credentials(before)} to {_credentials(after)}")
    return tuple(said)


def registered_requesters(factory: sessionmaker[Session]) -> list[RegisteredRequester]:
    with read_transaction(factory) as session:
        return list_requesters(session)


@dataclass(frozen=True)
class Removal:
    """What ``requesters remove`` did."""

    requester: RegisteredRequester
    ended_runs: int
    """Runs that name it: its row is kept (hidden) for them; 0: the row was deleted."""
    marketplace: bool
    keys_file: Path | None
    """The shared credentials file holding its profile (None: it has no profile there)."""
    keys_deleted: bool
    """Its profile was deleted from ``keys_file``."""


def remove_requester(factory: sessionmaker[Session], name: str, provider_type: str | None, *,
                     forget_keys: bool, now: datetime) -> Removal:
    """Remove a requester no open run uses: deleted when no run names it, else kept hidden (``removed_at``)
    so its ended runs stay whole. Its profile's keys stay unless ``forget_keys`` (and no other registered
    requester uses the profile). NotAllowed while a run is open."""
    with transaction(factory) as session:
        row = requester_row(session, name, provider_type)
        runs = session.execute(select(TaskRun.id, TaskRun.is_completed).where(TaskRun.requester_id == row.id)
                               .order_by(TaskRun.id)).all()
        open_runs = [str(run_id) for run_id, completed in runs if not completed]
        if open_runs:
            raise NotAllowed(f"requester {name!r} ({row.provider_type}) is used by open task run(s) "
                             f"{', '.join(open_runs)}; shut them down first (mephisto-dist shutdown RUN_ID)")
        removed = RegisteredRequester(row.requester_name, row.provider_type, row.aws_profile, row.endpoint_url, now)
        if runs:
            row.removed_at = now
        else:
            session.delete(row)
        session.flush()
        shared = any(r.aws_profile == removed.aws_profile for r in list_requesters(session))
    kept_in: Path | None = None
    deleted = False
    if removed.aws_profile and has_keys(removed.provider_type, removed.aws_profile):
        kept_in = keys_file(removed.provider_type)
        if forget_keys and not shared:
            deleted = delete_keys(removed.provider_type, removed.aws_profile) is not None
    return Removal(removed, len(runs), provider_class(removed.provider_type).is_marketplace, kept_in, deleted)
