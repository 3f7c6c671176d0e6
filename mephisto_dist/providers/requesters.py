"""Requesters: the provider accounts runs are launched under. A requester row names where its
credentials are (an AWS profile, or the standard AWS environment; for Prolific, the name its API key is kept
under in the Prolific credentials file) and its endpoint; never a key. How each provider keeps keys is
said here, so nothing outside this package compares a provider's name. A name is
one account: the same name is never registered for two provider types at once. A removed requester its
ended runs still name keeps its row, marked ``removed_at``, and is otherwise as if never registered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist.db.models import Requester
from mephisto_dist.db.unique_rows import get_or_create
from mephisto_dist.errors import ConfigError, NotFoundError
from mephisto_dist.providers import provider_class, provider_types
from mephisto_dist.providers.mturk import credentials as aws_credentials
from mephisto_dist.providers.mturk.client import RequesterAccess
from mephisto_dist.providers.prolific import credentials as prolific_credentials

if TYPE_CHECKING:
    from mephisto_dist.providers.prolific.client import ProlificAccess

PROLIFIC = "prolific"
AWS_KEYS = ("access_key_id", "secret_access_key")
PROLIFIC_KEYS = ("api_key",)


def _prolific_access(requester_name: str, endpoint_url: str | None) -> ProlificAccess:
    # Imported here: Prolific's client module loads httpx, which a run on another provider never needs.
    from mephisto_dist.providers.prolific.client import ProlificAccess

    return ProlificAccess(requester_name, endpoint_url)


@dataclass(frozen=True)
class RegisteredRequester:
    requester_name: str
    provider_type: str
    aws_profile: str | None
    endpoint_url: str | None
    removed_at: datetime | None = None

    def access(self) -> RequesterAccess:
        return RequesterAccess(self.requester_name, self.provider_type, self.aws_profile, self.endpoint_url)

    def access_args(self) -> dict[str, str]:
        """What a run's stored provider arguments carry to reach the account (never a key)."""
        if self.provider_type == PROLIFIC:
            return _prolific_access(self.requester_name, self.endpoint_url).as_args()
        return self.access().as_args()

    @property
    def endpoint(self) -> str:
        """The API endpoint it is reached at (the provider's own unless registered with one)."""
        if self.provider_type == PROLIFIC:
            return _prolific_access(self.requester_name, self.endpoint_url).endpoint
        return self.access().endpoint

    def credentials(self) -> str:
        """Where its keys are, in words."""
        if self.provider_type == PROLIFIC:
            return f"key '{self.aws_profile or self.requester_name}' in {prolific_credentials.credentials_file()}"
        return f"profile '{self.aws_profile}'" if self.aws_profile else "the standard AWS environment"


def key_names(provider_type: str) -> tuple[str, ...]:
    """The ``register`` keys that carry a provider's secret (all of them or none are given)."""
    if provider_type == PROLIFIC:
        return PROLIFIC_KEYS
    return AWS_KEYS if provider_class(provider_type).is_marketplace else ()


def keys_required(provider_type: str) -> bool:
    """A requester of this provider cannot be registered without keys (Prolific has no environment to
    fall back on, as AWS tools have)."""
    return provider_type == PROLIFIC


def keys_file(provider_type: str) -> Path:
    """The file a provider's keys are kept in (AWS's shared credentials file, or Prolific's)."""
    if provider_type == PROLIFIC:
        return prolific_credentials.credentials_file()
    return aws_credentials.credentials_file()


def save_keys(provider_type: str, name: str, keys: Mapping[str, str]) -> Path:
    """Keep a requester's keys under ``name`` in its provider's credentials file (mode 0600)."""
    if provider_type == PROLIFIC:
        return prolific_credentials.save_key(name, keys["api_key"])
    return aws_credentials.save_profile(name, keys["access_key_id"], keys["secret_access_key"])


def has_keys(provider_type: str, name: str) -> bool:
    if provider_type == PROLIFIC:
        return prolific_credentials.has_key(name)
    return aws_credentials.has_profile(name)


def delete_keys(provider_type: str, name: str) -> Path | None:
    if provider_type == PROLIFIC:
        return prolific_credentials.delete_key(name)
    return aws_credentials.delete_profile(name)


def check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"endpoint_url {url!r} must be an http:// or https:// URL")
    return url.rstrip("/")


class Keep(Enum):
    """``register``'s ``endpoint_url`` when none was given: the endpoint already registered (none for a new
    requester)."""

    ENDPOINT = "keep"


def register(session: Session, provider_type: str, name: str, *, aws_profile: str | None,
             endpoint_url: str | Literal[Keep.ENDPOINT] | None, now: datetime) -> RegisteredRequester:
    """Create or update the requester (registering again replaces how it is reached; ``endpoint_url``
    ``None`` is the provider's own endpoint). A removed requester registered again is back."""
    registrable = provider_types()
    if provider_type not in registrable:
        raise ConfigError(f"cannot register a requester for {provider_type!r}; choose one of {', '.join(registrable)}")
    if not name or len(name) > 255 or any(c.isspace() for c in name):
        raise ConfigError(f"requester name {name!r} must be 1 to 255 characters without spaces")
    other = next((r for r in find_requesters(session, name) if r.provider_type != provider_type), None)
    if other is not None:
        raise ConfigError(f"requester {name!r} is registered for {other.provider_type}; a name is one account: "
                          f"choose another name, or remove it first (mephisto-dist requesters remove {name})")
    requester_id, _ = get_or_create(session, Requester, {"provider_type": provider_type, "requester_name": name},
                                    {"created_at": now})
    row = session.get(Requester, requester_id)
    assert row is not None
    row.aws_profile = aws_profile
    if endpoint_url is not Keep.ENDPOINT:
        row.endpoint_url = endpoint_url
    row.removed_at = None
    return _registered(row)


def find_requesters(session: Session, name: str, *, removed: bool = False) -> list[RegisteredRequester]:
    """The requesters named ``name`` (one, unless registered before names were one account); with
    ``removed``, removed ones too."""
    query = select(Requester).where(Requester.requester_name == name).order_by(Requester.provider_type)
    if not removed:
        query = query.where(Requester.removed_at.is_(None))
    return [_registered(row) for row in session.scalars(query)]


def list_requesters(session: Session) -> list[RegisteredRequester]:
    rows = session.scalars(select(Requester).where(Requester.removed_at.is_(None))
                           .order_by(Requester.provider_type, Requester.requester_name))
    return [_registered(row) for row in rows]


def requester_row(session: Session, name: str, provider_type: str | None) -> Requester:
    """The registered (not removed) requester row named ``name``, locked for the caller's transaction;
    ``provider_type`` picks one when the name is registered for two."""
    query = select(Requester).where(Requester.requester_name == name, Requester.removed_at.is_(None))
    if provider_type is not None:
        query = query.where(Requester.provider_type == provider_type)
    rows = list(session.scalars(query.order_by(Requester.provider_type).with_for_update()))
    if not rows:
        raise NotFoundError(f"no requester named {name!r} is registered"
                            + (f" for {provider_type}" if provider_type else "") + " (see mephisto-dist requesters)")
    if len(rows) > 1:
        raise ConfigError(f"requester {name!r} is registered for {' and '.join(r.provider_type for r in rows)}; "
                          "say which with --provider TYPE")
    return rows[0]


def provider_access_args(session: Session, provider_type: str, provider_args: dict[str, Any],
                         deployment: str) -> dict[str, Any]:
    """A run's provider arguments with the requester's access filled in from its registration; an MTurk
    run needs a registered requester."""
    if not provider_class(provider_type).is_marketplace:
        return provider_args
    name = str(provider_args.get("requester_name") or "")
    row = session.scalar(select(Requester).where(Requester.provider_type == provider_type,
                                                 Requester.requester_name == name, Requester.removed_at.is_(None)))
    if row is None:
        keys = " ".join(f"{key}=..." for key in key_names(provider_type))
        raise ConfigError(f"requester {name!r} is not registered for {provider_type}; run "
                          f"'mephisto-dist register {provider_type} name={name} {keys}' first")
    given = {key: value for key, value in provider_args.items() if value is not None}
    return {**_registered(row).access_args(), "deployment": deployment, **given}


def _registered(row: Requester) -> RegisteredRequester:
    return RegisteredRequester(row.requester_name, row.provider_type, row.aws_profile, row.endpoint_url,
                               row.removed_at)
