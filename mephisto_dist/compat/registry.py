"""The stand-in for ``mephisto.operations.registry``: ``@register_mephisto_abstraction()`` on a
Blueprint class a task script defines. The class is recorded in the script's session; a run launched
from the script hosts the ``TaskRunnerClass`` of the registered blueprint whose ``BLUEPRINT_TYPE`` is the
run's blueprint (:func:`mephisto_dist.compat.runner.hosted_runner`).

As in Mephisto, a registration replaces the one of the same ``BLUEPRINT_TYPE``: a script may subclass a
provided blueprint (``RemoteProcedureBlueprint``) keeping its type, so that its config files select it
unchanged. Only blueprints are registered; architects and providers are mephisto-dist's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mephisto_dist.compat.session import current
from mephisto_dist.errors import ConfigError

__all__ = ["get_blueprint_from_type", "register_mephisto_abstraction"]

T = TypeVar("T")


def register_mephisto_abstraction() -> Callable[[T], T]:
    def register(cls: T) -> T:
        blueprint_type = getattr(cls, "BLUEPRINT_TYPE", None)
        if not isinstance(blueprint_type, str) or not blueprint_type:
            raise ConfigError(f"{getattr(cls, '__name__', cls)} is registered as a blueprint but has no "
                              "BLUEPRINT_TYPE; mephisto-dist registers blueprints only")
        current().blueprints[blueprint_type] = cls
        return cls

    return register


def get_blueprint_from_type(blueprint_type: str) -> Any:
    found = current().blueprints.get(blueprint_type)
    if found is None:
        raise ConfigError(f"no blueprint {blueprint_type!r} was registered by this script")
    return found
