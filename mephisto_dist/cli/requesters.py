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

REGISTER_KEYS = ("name", "access_key_id", "secret_access_key", "api_key", "endpoint_url")


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
    provider_type: Annotated[str, typer.Argument(
        metavar="PROVIDER", help="mturk, mturk_sandbox, prolific, inhouse or mock.")],
    pairs: Annotated[list[str] | None, typer.Argument(
        metavar="KEY=VALUE",
        help="name=NAME [access_key_id=... secret_access_key=... | api_key=...] [endpoint_url=URL]",
        show_default=False)] = None,
) -> None:
    """Register a requester: the account runs launch under (mephisto.provider.requester_name).

    \b
    Keys:
      name=NAME                 the requester's name (required)
      access_key_id=AKIA...     MTurk: the AWS access key (with secret_access_key)
      secret_access_key=...     MTurk: its secret
      api_key=...               Prolific: the API token
      endpoint_url=URL          another endpoint (mturk-local's, prolific-local's)

    MTurk keys are saved as profile NAME in the AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE,
    default ~/.aws/credentials); without keys the requester uses that profile if it exists, else the
    standard AWS environment. A Prolific api_key is saved under NAME in ~/.prolific/credentials
    (PROLIFIC_CREDENTIALS_FILE). Nothing else holds a secret. Registered again without endpoint_url, a
    requester keeps its endpoint; endpoint_url= with no URL is the provider's own (for mturk_sandbox,
    the real MTurk sandbox). A changed endpoint or credentials is said.

    Example: mephisto-dist register mturk_sandbox name=lab access_key_id=AKIA... secret_access_key=..."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.providers.requesters import Keep, check_endpoint, key_names
    from mephisto_dist.runs.requesters import register_requester

    given = _parse(pairs or [])
    name = given.get("name")
    if not name:
        fail("give the requester a name: name=NAME")
    wanted = key_names(provider_type) if provider_type in _registrable() else ()
    stray = [key for key in ("access_key_id", "secret_access_key", "api_key") if key in given and key not in wanted]
    if stray:
        fail(f"{provider_type} takes no {' or '.join(stray)}" + (f"; its keys: {', '.join(wanted)}" if wanted else ""))
    if any(key in given for key in wanted) and not all(key in given for key in wanted):
        fail(f"give both {' and '.join(wanted)}, or neither")
    endpoint: str | Literal[Keep.ENDPOINT] | None = Keep.ENDPOINT
    if "endpoint_url" in given:  # given empty: the provider's own endpoint
        endpoint = check_endpoint(given["endpoint_url"]) if given["endpoint_url"] else None
    keys = {key: given[key] for key in wanted} if wanted and wanted[0] in given else None
    with opened_runtime() as runtime:
        done = register_requester(runtime.sessions, provider_type, name, keys=keys, endpoint_url=endpoint,
                                  now=datetime.now(UTC))
    if done.keys_saved_to is not None:
        err_console.print(f"keys saved under '{name}' in {done.keys_saved_to}", highlight=False)
    for change in done.changes:
        console.print(change, highlight=False)
    console.print(f"registered {provider_type} requester {name!r}" +
                  ("" if not done.marketplace else f" (credentials: {done.credentials}"
                   f"{', endpoint ' + done.endpoint if done.endpoint else ''})"), highlight=False)


def _registrable() -> tuple[str, ...]:
    from mephisto_dist.providers import provider_types

    return provider_types()


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
    from mephisto_dist.providers import ChecksAccount, make_provider, provider_class
    from mephisto_dist.runs.requesters import registered_requesters

    with opened_runtime() as runtime:
        found = registered_requesters(runtime.sessions)
    table = Table(title="requesters", title_justify="left")
    for column in ("name", "provider", "credentials", "endpoint", "reachable"):
        table.add_column(column)
    for requester in found:
        if not provider_class(requester.provider_type).is_marketplace:
            table.add_row(requester.requester_name, requester.provider_type, "-", "-", "yes (nothing to reach)")
            continue
        state = "not checked"
        if check:
            try:
                provider = make_provider(requester.provider_type, requester.access_args())
                state = f"yes, {provider.account_check()}" if isinstance(provider, ChecksAccount) else "yes"
            except MephistoDistError as error:
                state = f"no: {error}"
        table.add_row(requester.requester_name, requester.provider_type, requester.credentials(),
                      requester.endpoint, state)
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
    Beat no longer looks after its HITs or studies: run hits outstanding --requester NAME first."""
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
        from mephisto_dist.providers import provider_class

        left = ("stops studies left active" if provider_class(kind).is_study_based else
                "expires or deletes HITs left")
        err_console.print(f"warning: beat no longer {left} on the account of requester "
                          f"{name!r}; register it again to list and clean them (mephisto-dist hits outstanding "
                          f"--requester {name})", highlight=False)
