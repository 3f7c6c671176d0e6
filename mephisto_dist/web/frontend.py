"""What ``/task_config.json`` returns: the blueprint's frontend args for a run's stored config, with the
task's own ``task_config`` (hooks file or script shared state) merged in last, as Mephisto did."""

from __future__ import annotations

from typing import Any

from mephisto_dist.blueprints import blueprint_module
from mephisto_dist.blueprints.runner import blueprint_type_of
from mephisto_dist.hooks import TaskHooks
from mephisto_dist.taskconfig import TaskConfig
from mephisto_dist.tips import STORED_KEY as STORED_TIPS

MEPHISTO_TASK_VERSION = "2.0.4"
"""The ``mephisto-task`` release this server speaks for (its front end warns on a mismatch)."""


def frontend_config(config: dict[str, Any], hooks: TaskHooks) -> dict[str, Any]:
    module = blueprint_module(blueprint_type_of(config))
    args: dict[str, Any] = module.frontend_args(TaskConfig.from_dict(config), hooks)
    return {**args, "tips": list(config.get(STORED_TIPS) or []), "mephisto_task_version": MEPHISTO_TASK_VERSION}


def index_page(config: dict[str, Any]) -> str | None:
    """The run's own page at ``/`` (a React task's index.html), or None for the static HTML shell."""
    page = getattr(blueprint_module(blueprint_type_of(config)), "INDEX_PAGE", None)
    return page if isinstance(page, str) else None
