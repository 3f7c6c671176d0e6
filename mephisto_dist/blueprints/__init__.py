"""Blueprints: what a task shows workers and what it needs from its files (Mephisto's task logic).

``static_task`` (:mod:`.static_task`): templated HTML pages filled from CSV/JSON data rows.
``remote_procedure`` (:mod:`.remote_procedure`): a React page calling the task's Python functions live.
Each blueprint's TaskRunner is in :mod:`.runner`.
"""

from __future__ import annotations

from types import ModuleType

from mephisto_dist.errors import ConfigError


def blueprint_for(name: str) -> ModuleType:
    """The module of the blueprint called ``name``; a ConfigError naming the supported ones otherwise."""
    from mephisto_dist.blueprints import remote_procedure, static_task

    known = {"static_task": static_task, remote_procedure.NAME: remote_procedure}
    try:
        return known[name]
    except KeyError:
        raise ConfigError(f"blueprint {name!r} is not supported yet; supported: {', '.join(known)}") from None
