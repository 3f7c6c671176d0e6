"""Task configs: the declared arguments of every blueprint, architect, provider and of ``mephisto.task``
(:mod:`.arguments`), and loading a Mephisto task folder's Hydra config with overrides (:mod:`.loader`)."""

from mephisto_dist.config.arguments import MISSING, Argument, Section, get_section, sections
from mephisto_dist.config.loader import TaskConfig, load_script_config, load_task_config

__all__ = ["MISSING", "Argument", "Section", "TaskConfig", "get_section", "load_script_config", "load_task_config", "sections"]
