"""``register`` and ``requesters``: the accounts runs launch under, and whether each answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import console, err_console, fail

REGISTER_KEYS = ("name", "access_key_id", "secret_access_key", "endpoint_url")


def _parse(pairs: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for number, pair in enumerate(pairs, start=1):
        key, sep, value = pair.partition("=")
        if not sep:  # not echoed: it may be a key typed without its '='
            fail(f"argument {number} after the provider is not key=value; keys: {', '.join(REGISTER_KEYS)}")
        if key not in REGISTER_KEYS:
            fail(f"unknown key {key!r}; keys: {', '.join(REGISTER_KEYS)}")
        given[key] = value
    return given


def register(
    provider_type: Annotated[str, typer.Argument(help="mturk, mturk_sandbox or mock.")],
    pairs: Annotated[list[str] | None, typer.Argument(
        help="name=NAME [access_key_id=... secret_access_key=...] [endpoint_url=URL]", show_default=False)] = None,
) -> None:
    """Register a requester. Keys go to a profile named NAME in the AWS shared credentials file; without
    keys the requester uses that profile if it exists, else the standard AWS environment."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.db.engine import transaction
    from mephisto_dist.providers import provider_types
    from mephisto_dist.providers.mturk import credentials
    from mephisto_dist.providers.requesters import check_endpoint
    from mephisto_dist.providers.requesters import register as register_requester

    given = _parse(pairs or [])
    name = given.get("name")
    if not name:
        fail("give the requester a name: name=NAME")
    if ("access_key_id" in given) != ("secret_access_key" in given):
        fail("give both access_key_id and secret_access_key, or neither")
    endpoint = check_endpoint(given["endpoint_url"]) if given.get("endpoint_url") else None
    profile: str | None = None
    marketplace = provider_type in provider_types(lambda cls: cls.is_marketplace)
    if marketplace:
        if "access_key_id" in given:
            path = credentials.save_profile(name, given["access_key_id"], given["secret_access_key"])
            err_console.print(f"keys saved as profile '{name}' in {path}", highlight=False)
            profile = name
        elif credentials.has_profile(name):
            profile = name
    with opened_runtime() as runtime, transaction(runtime.sessions) as session:
        register_requester(session, provider_type, name, aws_profile=profile, endpoint_url=endpoint,
                           now=datetime.now(UTC))
    where = f"profile '{profile}'" if profile else "the standard AWS environment"
    console.print(f"registered {provider_type} requester {name!r}" +
                  ("" if not marketplace else f" (credentials: {where}"
                   f"{', endpoint ' + endpoint if endpoint else ''})"), highlight=False)


def requesters(
    check: Annotated[bool, typer.Option("--check/--no-check", help="Ask each account's API for its balance.")] = True,
) -> None:
    """Registered requesters, where their credentials are, and whether each can reach its API."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.db.engine import read_transaction
    from mephisto_dist.errors import MephistoDistError
    from mephisto_dist.providers import provider_class
    from mephisto_dist.providers.mturk import MTurkProvider
    from mephisto_dist.providers.requesters import list_requesters

    with opened_runtime() as runtime, read_transaction(runtime.sessions) as session:
        found = list_requesters(session)
    table = Table(title="requesters", title_justify="left")
    for column in ("name", "provider", "credentials", "endpoint", "reachable"):
        table.add_column(column)
    for requester in found:
        cls = provider_class(requester.provider_type)
        if not issubclass(cls, MTurkProvider):
            table.add_row(requester.requester_name, requester.provider_type, "-", "-", "yes (nothing to reach)")
            continue
        access = requester.access()
        state = "not checked"
        if check:
            try:
                state = f"yes, balance ${cls(access.as_args()).balance()}"
            except MephistoDistError as error:
                state = f"no: {error}"
        table.add_row(requester.requester_name, requester.provider_type,
                      f"profile '{access.profile}'" if access.profile else "AWS environment", access.endpoint, state)
    if not found:
        console.print("no requesters registered; mephisto-dist register mturk_sandbox name=NAME ...")
        return
    console.print(table)
