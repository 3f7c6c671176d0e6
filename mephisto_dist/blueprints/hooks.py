"""A task folder's Python hooks: what Mephisto's ``SharedTaskState`` carried, read from one ``.py`` file.

The file is named by ``mephisto.blueprint.hooks_module`` (an absolute path, normally
``${task_dir}/hooks.py``) and may define any of:

- ``validate_onboarding(onboarding_data: dict) -> bool``: whether a worker's onboarding answers pass.
  Without it every onboarding submission passes.
- ``worker_can_do_unit(worker_name: str, unit_data: dict) -> bool``: whether this worker may take a unit
  with this data; a unit they may not take is skipped and the next one is tried.
- ``on_unit_submitted(unit_data: dict, outputs: dict) -> None``: called once a unit's submission is
  recorded.
- ``onboarding_data: dict``: merged into the onboarding page's data (its ``${key}`` placeholders).
- ``task_config: dict``: merged into ``/task_config.json``.
- ``function_registry: dict`` (``remote_procedure`` tasks): name -> ``fn(request_id, args, agent_state)``,
  the functions a worker's page may call; each call runs on the Celery workers.

Where each runs. ``validate_onboarding`` and ``worker_can_do_unit`` decide the answer to a worker's
request, so they run in the web process that answers it, as Mephisto ran them in its server process;
sending them to Celery would make a worker's page wait on a queue. They should be quick and must not
keep state between calls: every web process (on every machine) imports the file on its own.
``on_unit_submitted`` runs on the Celery workers, after the submission is committed; it should be short
(it holds a worker slot), and its task is delivered at least once, so the hook may (rarely) see the same
unit twice. A run with this hook is closed by that task, after the hook ran for its last unit. A hook that raises is logged
and the worker is told the task failed; it is never taken as a verdict on the worker.

The file is imported once per path per process. A run created with a bundle (``mephisto_dist.runs.bundles``)
imports it from the bundle's copy of the task folder, which every machine fetches from storage, with
that folder first on ``sys.path`` so that it can import its neighbours.

A run launched from a Mephisto task script (``run_task.py``) has no hooks file: its hooks are the
callbacks of the script's ``SharedTaskState``, which each process obtains by running the bundle's copy of
the script in capture mode (:mod:`mephisto_dist.compat`; ``mephisto_dist.runs.bundles.run_files`` picks the
source of a run's hooks).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Protocol

from mephisto_dist.config.run_config import SCRIPT_KEY as RUN_SCRIPT_KEY
from mephisto_dist.errors import ConfigError

log = logging.getLogger(__name__)

HOOKS_ARG: Final = "hooks_module"
FUNCTIONS: Final = ("validate_onboarding", "worker_can_do_unit", "on_unit_submitted")
DICTS: Final = ("onboarding_data", "task_config")

SCRIPT_KEY: Final = RUN_SCRIPT_KEY
"""Key of a run's stored config naming the task script it was launched from (see mephisto_dist.compat)."""


class WorkerQualifications(Protocol):
    """What a hook may do with a worker's qualifications (a validator grants pass or fail)."""

    def granted(self, worker_id: int) -> dict[str, int]: ...

    def grant(self, worker_id: int, name: str, value: int) -> None: ...

    def revoke(self, worker_id: int, name: str) -> None: ...

    def count_unit(self, worker_id: int, name: str, unit_id: int) -> bool:
        """Add one to the worker's ``name`` counter for this unit, unless the unit was counted already
        (its event run again); True when this call counted it."""
        ...


@dataclass(frozen=True)
class SubmittedUnit:
    """What ``on_unit_submitted`` learns about a unit whose submission was recorded."""

    unit_id: int
    unit_index: int
    run_id: int
    unit_data: dict[str, Any]
    outputs: dict[str, Any]
    worker_id: int | None
    worker_name: str | None
    agent_id: str | None
    status: str
    qualifications: WorkerQualifications | None = None


ValidateOnboarding = Callable[[dict[str, Any]], Any]
WorkerCanDoUnit = Callable[[str, dict[str, Any]], Any]
OnUnitSubmitted = Callable[[SubmittedUnit], Any]


@dataclass(frozen=True)
class GoldHooks:
    """Mephisto's ``GoldUnitSharedState``: a gold's data for a worker (name, id), and the two decisions
    over (units completed, golds right, golds wrong, min_golds or max_incorrect_golds)."""

    data_for: Callable[[str, int], dict[str, Any]]
    needs_gold: Callable[[int, int, int, int], bool]
    qualifies: Callable[[int, int, int, int], bool]


@dataclass(frozen=True)
class TaskHooks:
    """The hooks one file defines; an absent one is ``None`` (or an empty dict)."""

    path: str | None = None
    validate_onboarding: ValidateOnboarding | None = None
    worker_can_do_unit: WorkerCanDoUnit | None = None
    on_unit_submitted: OnUnitSubmitted | None = None
    onboarding_data: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)
    function_registry: dict[str, Callable[..., Any]] = field(default_factory=dict)
    screening_data: Callable[[], dict[str, Any] | None] | None = None
    """The next screening unit's data (a task script's ``screening_data_factory``); None when exhausted."""
    gold: GoldHooks | None = None
    """A task script's gold unit functions (``mephisto_dist.work.golds``)."""
    task_runner: Any = None
    """A task script's own TaskRunner class (the ``TaskRunnerClass`` of the blueprint it registered), which
    runner workers host (``mephisto_dist.runners.assignments``); None for mephisto-dist's own runners."""
    shared_state: Any = None
    """The task script's shared state, which a hosted TaskRunner is constructed with."""

    @property
    def hosts_assignments(self) -> bool:
        """Whether the run's assignments wait for all their agents and then run on a runner worker."""
        return self.task_runner is not None and bool(self.task_runner.hosts_units())

    @property
    def plays_onboarding(self) -> bool:
        """Whether the run's onboarding is played by its hosted runner (``run_onboarding``: a parlai_chat
        onboarding world) rather than answered on a page alone."""
        return self.hosts_assignments and bool(self.task_runner.plays_onboarding())


NO_HOOKS: Final = TaskHooks()


def hooks_path(blueprint_args: Mapping[str, Any]) -> Path | None:
    """The configured hooks file, checked to be an absolute path to a ``.py`` file; ``None`` if unset."""
    value = blueprint_args.get(HOOKS_ARG)
    if value is None or value == "":
        return None
    path = Path(str(value)).expanduser()
    key = f"mephisto.blueprint.{HOOKS_ARG}"
    if not path.is_absolute():
        # Web and worker processes load it later from another directory, maybe on another machine.
        raise ConfigError(f"{key} must be an absolute path (write ${{task_dir}}/{path}), got {value!r}")
    if path.suffix != ".py":
        raise ConfigError(f"{key} must name a .py file, got {path}")
    if not path.exists():
        raise ConfigError(f"{key} not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{key} is not a file: {path}")
    return path


def hooks_for(blueprint_args: Mapping[str, Any]) -> TaskHooks:
    """The hooks of a run's blueprint arguments (:data:`NO_HOOKS` when it names no file)."""
    path = hooks_path(blueprint_args)
    # Its folder first on sys.path, as when Mephisto's run_task.py ran from the task folder.
    return NO_HOOKS if path is None else load_hooks(str(path), str(path.parent))


@lru_cache(maxsize=32)
def load_hooks(path: str, search_dir: str | None = None) -> TaskHooks:
    """Import the file at ``path`` (once per process) and check what it defines; ConfigError if unusable.

    A module-level name that is not one of the hooks is ignored, so helpers may live next to them.
    With ``search_dir``, the file may import modules from that folder.
    """
    module = _import(Path(path), search_dir)
    found: dict[str, Any] = {}
    for name in FUNCTIONS:
        value = getattr(module, name, None)
        if value is not None and not callable(value):
            raise ConfigError(f"{path}: {name} must be a function, found {type(value).__name__}")
        found[name] = value
    for name in DICTS:
        value = getattr(module, name, None)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: {name} must be a dict, found {type(value).__name__}")
        found[name] = dict(value or {})
    found["function_registry"] = _function_registry(path, getattr(module, "function_registry", None))
    plain = found["on_unit_submitted"]
    if plain is not None:
        found["on_unit_submitted"] = _with_data_and_outputs(plain)
    return TaskHooks(path=path, **found)


def _function_registry(path: str, value: Any) -> dict[str, Callable[..., Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: function_registry must be a dict of name -> function, "
                          f"found {type(value).__name__}")
    for name, function in value.items():
        if not isinstance(name, str) or not callable(function):
            raise ConfigError(f"{path}: function_registry[{name!r}] must be a function, "
                              f"found {type(function).__name__}")
    return dict(value)


def _with_data_and_outputs(hook: Callable[[dict[str, Any], dict[str, Any]], Any]) -> OnUnitSubmitted:
    """A hooks file's ``on_unit_submitted(unit_data, outputs)`` as an event hook."""
    def on_unit_submitted(unit: SubmittedUnit) -> Any:
        return hook(dict(unit.unit_data), dict(unit.outputs))
    return on_unit_submitted


def _import(path: Path, search_dir: str | None = None) -> ModuleType:
    if search_dir is None:
        return _exec(path)
    before = set(sys.modules)
    sys.path.insert(0, search_dir)
    try:
        return _exec(path)
    finally:
        sys.path.remove(search_dir)
        # The folder's own modules stay referenced by the hooks module, but leave sys.modules: another
        # run's bundle may hold a different module under the same name.
        for name in set(sys.modules) - before:
            module_file = str(getattr(sys.modules[name], "__file__", "") or "")
            if module_file.startswith(search_dir + "/") and not name.startswith("mephisto_dist_task_hooks_"):
                del sys.modules[name]


def _exec(path: Path) -> ModuleType:
    # A name of its own per file, so two task folders' hooks.py never replace each other.
    name = f"mephisto_dist_task_hooks_{hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(name, None)
        raise ConfigError(f"{path} line {error.lineno}: invalid Python ({error.msg})") from None
    except FileNotFoundError:
        sys.modules.pop(name, None)
        raise ConfigError(f"mephisto.blueprint.{HOOKS_ARG} not found: {path}") from None
    except Exception as error:  # noqa: BLE001  (user code: any error means the file is unusable)
        sys.modules.pop(name, None)
        raise ConfigError(f"{path} failed to import: {type(error).__name__}: {_first_line(error)}") from None
    return module


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
