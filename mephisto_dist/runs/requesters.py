"""The requester accounts runs launch under: registering one (its keys saved as an AWS profile for a
marketplace) and listing them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.providers import provider_types
from mephisto_dist.providers.mturk import credentials
from mephisto_dist.providers.requesters import RegisteredRequester, list_requesters, register


@dataclass(frozen=True)
class Registration:
    """What ``register`` did."""

    marketplace: bool
    profile: str | None
    """The AWS profile the requester uses (``None``: the standard AWS environment)."""
    keys_saved_to: Path | None
    """The shared credentials file the keys were written to, when keys were given."""


def register_requester(factory: sessionmaker[Session], provider_type: str, name: str, *,
                       keys: tuple[str, str] | None, endpoint_url: str | None, now: datetime) -> Registration:
    """Register (or re-register) a requester. A marketplace's ``keys`` (access key id, secret) go to a
    profile named ``name``; without keys it uses that profile if it exists, else the AWS environment."""
    profile: str | None = None
    saved: Path | None = None
    marketplace = provider_type in provider_types(lambda cls: cls.is_marketplace)
    if marketplace:
        if keys is not None:
            saved = credentials.save_profile(name, keys[0], keys[1])
            profile = name
        elif credentials.has_profile(name):
            profile = name
    with transaction(factory) as session:
        register(session, provider_type, name, aws_profile=profile, endpoint_url=endpoint_url, now=now)
    return Registration(marketplace, profile, saved)


def registered_requesters(factory: sessionmaker[Session]) -> list[RegisteredRequester]:
    with read_transaction(factory) as session:
        return list_requesters(session)
