"""``mephisto.operations.hydra_config``: the base config dataclass a script may extend.

``@task_script(config=MyConfig)`` reads the dataclass's fields as the script's own top-level keys (their
defaults under the YAML file's values) and its ``defaults`` list's ``{"conf": NAME}`` as the config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskConfig:
    mephisto: Any = field(default_factory=dict)
    task_dir: str = ""
    num_tasks: int = 5
    defaults: list[Any] = field(default_factory=lambda: ["_self_"])


RunScriptConfig = TaskConfig


def build_default_task_config(conf_name: str) -> type[TaskConfig]:
    """A config class whose defaults pick ``conf_name``, as Mephisto's does."""
    chosen = ["_self_", {"conf": conf_name}]

    @dataclass
    class DefaultTaskConfig(TaskConfig):
        defaults: list[Any] = field(default_factory=lambda: list(chosen))

    return DefaultTaskConfig


def register_script_config(name: str, module: Any) -> None:
    """Hydra's config store is not used: ``task_script`` reads the config itself."""
