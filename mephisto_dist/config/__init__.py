"""Task configs: the declared arguments of every blueprint, architect, provider and of ``mephisto.task``
(:mod:`.arguments`), a config as the code uses it (:mod:`.task_config`), and loading a Mephisto task
folder's Hydra config with overrides (:mod:`.loader`: OmegaConf and YAML, so it is imported by name only
where a task folder is read, never with this package)."""

from mephisto_dist.config.arguments import MISSING, Argument, Section, get_section, sections
from mephisto_dist.config.task_config import TaskConfig

__all__ = ["MISSING", "Argument", "Section", "TaskConfig", "get_section", "sections"]
