"""``register`` and ``requesters``: the accounts runs launch under, whether each answers, and removing one.
Registering again says what it changed (an endpoint above all) and keeps the endpoint when none is given."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from mephisto_dist.cli.console import console, err_console, fail

if TYPE_CHECKING:
    from mephisto_dist.providers.requesters import Keep

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
    provider_type: Annotated[str, typer.Argument(metavar="PROVIDER", help="mturk, mturk_sandbox or mock.")],
    pairs: Annotated[list[str] | None, typer.Argument(
        metavar="KEY=VALUE", help="name=NAME [access_key_id=... secret_access_key=...] [endpoint_url=URL]",
        show_default=False)] = None,
) -> None:
    """Register a requester: the account runs launch under (mephisto.provider.requester_name).

    \b
    Keys:
      name=NAME                 the requester's name (required)
      access_key_id=AKIA...     the AWS access key (with secret_access_key)
      secret_access_key=...     its secret
      endpoint_url=URL          another endpoint (mturk-local's http://HOST:PORT)

    The keys are saved as profile NAME in the AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE,
    default ~/.aws/credentials); nothing else holds the secret. Without keys the requester uses that
    profile if it exists, else the standard AWS environment. Registered again without endpoint_url, a
    requester keeps its endpoint; endpoint_url= with no URL is the provider's own (for mturk_sandbox,
    the real MTurk sandbox). A changed endpoint or credentials is said.

    Example: mephisto-dist register mturk_sandbox name=lab access_key_id=AKIA... secret_access_key=..."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.providers.requesters import Keep, check_endpoint
    from mephisto_dist.runs.requesters import register_requester

    given = _parse(pairs or [])
    name = given.get("name")
    if not name:
        fail("give the requester a name: name=NAME")
    if ("access_key_id" in given) != ("secret_access_key" in given):
        fail("give both access_key_id and secret_access_key, or neither")
    endpoint: str | Literal[Keep.ENDPOINT] | None = Keep.ENDPOINT
    if "endpoint_url" in given:  # given empty: the provider's own endpoint
        endpoint = check_endpoint(given["endpoint_url"]) if given["endpoint_url"] else None
    keys = (given["access_key_id"], given["secret_access_key"]) if "access_key_id" in given else None
    with opened_runtime() as runtime:
        done = register_requester(runtime.sessions, provider_type, name, keys=keys, endpoint_url=endpoint,
                                  now=datetime.now(UTC))
    if done.keys_saved_to is not None:
        err_console.print(f"keys saved as profile '{name}' in {done.keys_saved_to}", highlight=False)
    for change in done.changes:
        console.print(change, highlight=False)
    profile = done.profile
    where = f"profile '{profile}'" if profile else "the standard AWS environment"
    console.print(f"registered {provider_type} requester {name!r}" +
                  ("" if not done.marketplace else f" (credentials: {where}"
                   f"{', endpoint ' + done.endpoint if done.endpoint else ''})"), highlight=False)


requesters_app = typer.Typer()


@requesters_app.callback(invoke_without_command=True)
def requesters(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Ask each account's API for its balance.")] = True,
) -> None:
    """Registered requesters, where their credentials are, and whether each can reach its API
    (mephisto-dist register adds one; requesters remove NAME removes one)."""
    if ctx.invoked_subcommand is not None:
        return
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.errors import MephistoDistError
    from mephisto_dist.providers import provider_class
    from mephisto_dist.providers.mturk import MTurkProvider
    from mephisto_dist.runs.requesters import registered_requesters

    with opened_runtime() as runtime:
        found = registered_requesters(runtime.sessions)
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


@requesters_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(metavar="REQUESTER", help="The requester's name.")],
    provider: Annotated[str | None, typer.Option(
        "--provider", metavar="PROVIDER", help="Its provider type, when the name is registered for two.")] = None,
    forget_keys: Annotated[bool, typer.Option(
        "--forget-keys", help="Also delete its profile (its keys) from the AWS shared credentials file.")] = False,
) -> None:
    """Remove a requester no open task run uses.

    Refused while one of its task runs is open. Its ended runs keep their data (export and review still
    work). Its keys stay in the AWS shared credentials file unless --forget-keys.
    Beat no longer looks after its HITs: run hits outstanding --requester NAME first."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.runs.requesters import remove_requester

    with opened_runtime() as runtime:
        done = remove_requester(runtime.sessions, name, provider, forget_keys=forget_keys, now=datetime.now(UTC))
    kind = done.requester.provider_type
    console.print(f"removed {kind} requester {name!r}" + (
        f" (kept, hidden, for its {done.ended_runs} ended run(s): their export and review still work)"
        if done.ended_runs else ""), highlight=False)
    profile = done.requester.aws_profile
    if done.keys_deleted:
        err_console.print(f"deleted profile '{profile}' (its keys) from {done.keys_file}", highlight=False)
    elif done.keys_file is not None:
        err_console.print(f"its keys remain in profile '{profile}' of {done.keys_file}"
                          + (" (another requester uses that profile)" if forget_keys else
                             " (--forget-keys deletes them)"), highlight=False)
    if done.marketplace:
        err_console.print(f"warning: beat no longer expires or deletes HITs left on the account of requester "
                          f"{name!r}; register it again to list and clean them (mephisto-dist hits outstanding "
                          f"--requester {name})", highlight=False)
