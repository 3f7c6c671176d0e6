"""The registry of ``mephisto.*`` modules this layer provides, and their installation while a script runs.

:data:`PROVIDED` maps a Mephisto module name to the module of ours that stands in for it; a later part
(e.g. the live ``remote_procedure`` blueprint) adds its own with :func:`provide`. Any other ``mephisto``
module a script imports fails with an ImportError naming it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

ROOT: Final = "mephisto"

PROVIDED: dict[str, str] = {
    "mephisto.tools.scripts": "mephisto_dist.compat.scripts",
    "mephisto.operations.operator": "mephisto_dist.compat.operator",
    "mephisto.operations.hydra_config": "mephisto_dist.compat.hydra_config",
    "mephisto.abstractions.blueprint": "mephisto_dist.compat.shared_state",
    "mephisto.abstractions.blueprints.abstract.static_task.static_blueprint": "mephisto_dist.compat.shared_state",
    "mephisto.abstractions.blueprints.mixins.screen_task_required": "mephisto_dist.compat.mixins",
    "mephisto.abstractions.blueprints.mixins.use_gold_unit": "mephisto_dist.compat.mixins",
    "mephisto.abstractions.blueprints.mixins.onboarding_required": "mephisto_dist.compat.mixins",
    "mephisto.abstractions.blueprints.static_html_task.static_html_blueprint":
        "mephisto_dist.compat.blueprint_types",
    "mephisto.abstractions.blueprints.static_react_task.static_react_blueprint":
        "mephisto_dist.compat.blueprint_types",
    "mephisto.abstractions.blueprints.remote_procedure.remote_procedure_blueprint":
        "mephisto_dist.compat.remote_procedure",
    "mephisto.abstractions.blueprints.remote_procedure.remote_procedure_agent_state":
        "mephisto_dist.compat.remote_procedure",
    "mephisto.abstractions.blueprints.parlai_chat.parlai_chat_blueprint": "mephisto_dist.compat.parlai_chat",
    "mephisto.abstractions.blueprints.parlai_chat.parlai_chat_task_runner": "mephisto_dist.compat.parlai_chat",
    "mephisto.abstractions.blueprints.parlai_chat.parlai_chat_agent_state": "mephisto_dist.compat.parlai_chat",
    "mephisto.abstractions._subcomponents.task_runner": "mephisto_dist.compat.task_runner",
    "mephisto.operations.registry": "mephisto_dist.compat.registry",
    "mephisto.data_model.exceptions": "mephisto_dist.compat.exceptions",
    "mephisto.data_model.unit": "mephisto_dist.compat.data_model",
    "mephisto.data_model.agent": "mephisto_dist.compat.data_model",
    "mephisto.data_model.worker": "mephisto_dist.compat.data_model",
    "mephisto.data_model.qualification": "mephisto_dist.compat.qualification",
    "mephisto.utils.qualifications": "mephisto_dist.compat.qualification",
}


def provide(mephisto_name: str, our_module: str) -> None:
    """Stand ``our_module`` in for ``mephisto_name`` from now on."""
    if mephisto_name.split(".")[0] != ROOT:
        raise ValueError(f"{mephisto_name} is not a mephisto module")
    PROVIDED[mephisto_name] = our_module


def packages(names: Sequence[str]) -> set[str]:
    """Every parent package of the provided modules (``mephisto``, ``mephisto.tools``, ...)."""
    parents: set[str] = set()
    for name in names:
        parts = name.split(".")
        parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return parents - set(names)


class _Refuser(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` while a script runs: a ``mephisto`` module we do not provide is an
    ImportError naming it, rather than the real Mephisto's (which would really run Mephisto)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == ROOT or fullname.startswith(ROOT + "."):
            raise ModuleNotFoundError(f"No module named '{fullname}' in mephisto-dist's compatibility layer",
                                      name=fullname)
        return None


@contextmanager
def installed() -> Iterator[None]:
    """Put the provided modules in ``sys.modules`` (shadowing a real Mephisto), then restore."""
    saved = {name: module for name, module in sys.modules.items() if name == ROOT or name.startswith(ROOT + ".")}
    for name in saved:
        del sys.modules[name]
    for name in sorted(packages(list(PROVIDED))):
        package = types.ModuleType(name, f"mephisto-dist's stand-in for the {name} package")
        package.__path__ = []
        sys.modules[name] = package
    for name, target in PROVIDED.items():
        sys.modules[name] = importlib.import_module(target)
    for name in PROVIDED:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])
    for name in packages(list(PROVIDED)):
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])
    refuser = _Refuser()
    sys.meta_path.insert(0, refuser)
    try:
        yield
    finally:
        sys.meta_path.remove(refuser)
        for name in [n for n in sys.modules if n == ROOT or n.startswith(ROOT + ".")]:
            del sys.modules[name]
        sys.modules.update(saved)
