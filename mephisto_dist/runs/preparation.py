"""Turning a task folder into a TaskRun: validate everything first, build the served files, then create
the run with all its assignments and units in one transaction. Nothing is left behind on failure."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mephisto_dist.architects import ServerPlan, architect_class, check_port_free, plan_server
from mephisto_dist.blueprints import (
    blueprint_for,
    check_python_features,
    stored_frontend,
    units_per_assignment,
)
from mephisto_dist.blueprints.hooks import SCRIPT_KEY
from mephisto_dist.config import TaskConfig, tips
from mephisto_dist.config.run_config import FRONTEND_KEY, RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.errors import ConfigError
from mephisto_dist.errors.drivers import translate
from mephisto_dist.providers import make_provider, provider_class
from mephisto_dist.providers.requesters import provider_access_args
from mephisto_dist.queue import DEPLOY_SERVER, LAUNCH_UNITS
from mephisto_dist.runs.bundles import (
    check_hooks_inside,
    check_script_inside,
    review_bundle_source,
    store_bundle,
)
from mephisto_dist.runs.task_runs import NewRun, create_task_run, port_taken_message, run_on_port
from mephisto_dist.runtime import Runtime

BUILD_CACHE_DIR = "build-cache"
"""Under the data dir: what a blueprint builds once per machine (parlai_chat's default page)."""


@dataclass(frozen=True)
class PreparedRun:
    config: TaskConfig
    rows: list[dict[str, Any]]
    server: ServerPlan
    script: dict[str, Any] | None = None
    """The task script the run was launched from (``mephisto_dist.compat``), stored with its config."""
    tips: list[dict[str, str]] | None = None
    """Tips seeded from ``tips_location``, stored with the run."""


def prepare_run(task_dir: str | Path, conf: str, overrides: Sequence[str], *, check_port: bool) -> PreparedRun:
    """Every check that can fail, before anything is created."""
    # Here, not with this module: ``run`` forks its web server first, which never reads a task folder,
    # and OmegaConf would delay it by a twentieth of a second.
    from mephisto_dist.config.loader import load_task_config

    return prepare_config(load_task_config(task_dir, conf, overrides), check_port=check_port)


def prepare_config(config: TaskConfig, *, check_port: bool, rows: list[dict[str, Any]] | None = None,
                   script: dict[str, Any] | None = None) -> PreparedRun:
    """The checks of :func:`prepare_run` on a loaded config; ``rows`` are data given by a task script."""
    blueprint = blueprint_for(config.blueprint_type)
    make_provider(config.provider_type, config.provider)
    server = plan_server(config.architect_type, config.architect)
    check_python_features(config.blueprint, has_script=script is not None)
    loaded = blueprint.validate_and_load(config.blueprint, rows)
    check_hooks_inside(config.blueprint, Path(config.task_dir))
    if script is not None:
        check_script_inside(script, Path(config.task_dir))
    if check_port:
        check_port_free(server)
    return PreparedRun(config, loaded, server, script, tips.read_tips(config.blueprint))


def create_run(runtime: Runtime, prepared: PreparedRun) -> int:
    """Build the run's files, store them with the task folder's Python as the run's bundle, and create
    its rows. A bundle stored for a run whose rows then fail is harmless: it is content-addressed, and
    the next identical run reuses it."""
    config = prepared.config
    stored = config.as_dict()
    with transaction(runtime.sessions) as session:
        stored["provider"] = provider_access_args(session, config.provider_type, stored["provider"],
                                                  runtime.settings.deployment)
    blueprint = blueprint_for(config.blueprint_type)
    with tempfile.TemporaryDirectory(prefix="mephisto-dist-build-") as scratch:
        build_dir = Path(scratch) / "build"
        blueprint.build(config.blueprint, build_dir, config.provider_type,
                        cache_dir=runtime.settings.data_dir / BUILD_CACHE_DIR)
        bundle_key = store_bundle(runtime.storage, build_dir, Path(config.task_dir),
                                  review_bundle_source(config.blueprint.get("task_source_review")))
    if prepared.script is not None:
        stored[SCRIPT_KEY] = prepared.script
    stored[tips.STORED_KEY] = prepared.tips
    stored[FRONTEND_KEY] = stored_frontend(config.blueprint_type, config.blueprint)
    run_config = RunConfig.parse(stored)
    new = NewRun(
        task_name=run_config.task.task_name,
        blueprint_type=config.blueprint_type,
        architect_type=config.architect_type,
        provider_type=config.provider_type,
        requester_name=str(config.provider.get("requester_name") or f"{config.provider_type}_requester"),
        sandbox=provider_class(config.provider_type).is_sandbox,
        config=stored,
        task_dir=str(config.task_dir),
        build_dir="",
        bundle_key=bundle_key,
        server_url=prepared.server.public_url,
        max_concurrent_units=run_config.task.max_num_concurrent_units,
        units_per_assignment=units_per_assignment(config.blueprint_type, config.blueprint,
                                                  run_config.blueprint.units_per_assignment),
        pay_amount=run_config.task.task_reward,
        assignment_data=[blueprint.init_task_data(row, config.blueprint) for row in prepared.rows],
    )
    with transaction(runtime.sessions) as session:
        if prepared.server.should_run_server:
            holder = run_on_port(session, prepared.server.port)
            if holder is not None:
                raise ConfigError(port_taken_message(prepared.server.port, holder, can_override=True))
        return create_task_run(session, new, now=datetime.now(UTC))


def check_port_unclaimed(runtime: Runtime, server: ServerPlan, *, resuming: int | None = None) -> None:
    """Refuse, before anything is started or created, a server on a port another open run serves."""
    if not server.should_run_server:
        return
    with transaction(runtime.sessions) as session:
        holder = run_on_port(session, server.port, exclude=resuming)
    if holder is not None:
        raise ConfigError(port_taken_message(server.port, holder, can_override=resuming is None))


def check_services(runtime: Runtime, *, resuming: int | None = None) -> None:
    """Refuse, before anything is created, a run whose Redis (its limits and its task queue) does not
    answer: created anyway, the run would stay open and unlaunchable, holding its port. The database has
    answered the schema check by then, and storage answers when the run's bundle is stored, before its
    rows are written."""
    try:
        runtime.redis.ping()
    except Exception as error:
        translated = translate(error, runtime.settings)
        if translated is None:
            raise
        undone = "no task run was created" if resuming is None else f"task run {resuming} was not resumed"
        raise type(translated)(f"{translated} ({undone})") from error


def enqueue_launch(runtime: Runtime, run_id: int, architect_type: str | None = None) -> None:
    """Launch the run's units; a run whose server is deployed remotely (``ec2``) gets its server first,
    and the deploy task launches the units once the server's URL is known."""
    remote = architect_type is not None and architect_class(architect_type).deploys_remotely
    runtime.queue.enqueue(DEPLOY_SERVER if remote else LAUNCH_UNITS, run_id)
