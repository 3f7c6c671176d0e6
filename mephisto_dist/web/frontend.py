"""What ``/task_config.json`` returns: the blueprint's frontend args for a run's stored config."""

from __future__ import annotations

from typing import Any

from mephisto_dist.blueprints import blueprint_for
from mephisto_dist.blueprints.runner import blueprint_type_of
from mephisto_dist.hooks import TaskHooks
from mephisto_dist.taskconfig import TaskConfig


def frontend_config(config: dict[str, Any], hooks: TaskHooks) -> dict[str, Any]:
    args: dict[str, Any] = blueprint_for(blueprint_type_of(config)).frontend_args(TaskConfig.from_dict(config), hooks)
    return args
