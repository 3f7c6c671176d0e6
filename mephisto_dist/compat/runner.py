"""Running a task script: with the provided modules installed, in a session, turning every failure of the
script into one line that names what failed (an import the layer lacks, a call, the script's own error).

:func:`captured_hooks` is how a web or worker process obtains a script run's callbacks, as
:class:`mephisto_dist.blueprints.hooks.TaskHooks`: it runs the script once per process in capture mode.
"""

from __future__ import annotations

import json
import re
import runpy
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mephisto_dist.blueprints.hooks import GoldHooks, SubmittedUnit, TaskHooks
from mephisto_dist.compat import modules
from mephisto_dist.compat.data_model import Agent, AgentState, Unit, Worker
from mephisto_dist.compat.parlai_chat import BLUEPRINT_TYPE_PARLAI_CHAT, ParlAIChatBlueprint
from mephisto_dist.compat.session import CaptureComplete, ScriptRef, ScriptSession, active
from mephisto_dist.compat.shared_state import accept_onboarding, any_worker_any_unit, ignore_unit
from mephisto_dist.errors import ConfigError, MephistoDistError

_ONE_SCRIPT = threading.RLock()
_MISSING_NAME = re.compile(r"cannot import name '([^']+)'")
_IMPORTED_MODULE = re.compile(r"^\s*(?:from|import)\s+(mephisto(?:\.\w+)*)")


def run_script(ref: ScriptRef, host: Any, cfg: dict[str, Any] | None = None) -> ScriptSession:
    """Run the script to its end (launch) or to its ``launch_task_run`` (capture)."""
    path = Path(ref.path)
    if not path.is_file():
        raise ConfigError(f"task script not found: {path}")
    session = ScriptSession(ref, host, stored_cfg=cfg)
    # One script at a time per process: the provided modules live in the process-wide sys.modules (a
    # runner worker's threads capture scripts concurrently).
    with _ONE_SCRIPT, modules.installed(), active(session), _script_folder_importable(path.parent):
        try:
            runpy.run_path(str(path), run_name="__main__")
        except CaptureComplete:
            pass
        except SystemExit as error:
            if error.code not in (0, None):
                raise ConfigError(f"{ref.name} exited with code {error.code}") from None
        except MephistoDistError:
            raise
        except Exception as error:
            if error is session.host_error:
                raise
            raise ConfigError(describe_failure(path, error)) from None
    if not session.launched:
        raise ConfigError(f"{ref.name} ran to its end without calling operator.launch_task_run")
    return session


@contextmanager
def _script_folder_importable(folder: Path) -> Iterator[None]:
    """The script's folder first on ``sys.path``, as ``python run_task.py`` has it; the folder's modules
    leave ``sys.modules`` afterwards (another run's folder may hold different ones of the same name)."""
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            module_file = str(getattr(sys.modules[name], "__file__", "") or "")
            if module_file.startswith(f"{folder}/"):
                del sys.modules[name]


def describe_failure(path: Path, error: BaseException) -> str:
    """One line: where in the script, and what the layer lacks (or what the script raised)."""
    line, source = _script_line(path, error)
    where = f"{path.name} line {line}" if line is not None else path.name
    imported = _IMPORTED_MODULE.match(source)
    if isinstance(error, ImportError) and imported is not None:
        # The statement names the module as the script wrote it; the error, where the import stopped.
        missing = _MISSING_NAME.search(str(error))
        name = f"{imported.group(1)}.{missing.group(1)}" if missing else imported.group(1)
        return f"{where} imports {name}, which mephisto-dist's compatibility layer does not provide"
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, AttributeError) and type(getattr(error, "obj", None)).__module__.startswith(
            "mephisto_dist.compat"):
        return f"{where} calls {type(error.obj).__name__}.{error.name}, which mephisto-dist's compatibility " \
               "layer does not provide"
    return f"{where} failed: {type(error).__name__}: {message}"


def _script_line(path: Path, error: BaseException) -> tuple[int | None, str]:
    found: tuple[int | None, str] = (None, "")
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            found = (frame.lineno, frame.line or "")
    return found


@dataclass
class CaptureHost:
    """Runs the script only for its shared state: nothing is built or launched."""

    capturing: bool = True
    log_dir: Path | None = None

    def launch(self, mephisto: dict[str, Any], shared_state: Any) -> str | None:
        raise CaptureComplete

    def wait(self) -> None:
        return None

    def say(self, text: str) -> None:
        return None


def capture(ref: ScriptRef, cfg: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """The run config and shared state the script hands to ``launch_task_run``; with ``cfg`` (the config
    stored at launch) the script receives it rather than reading its config files again."""
    session = run_script(ref, CaptureHost(), cfg)
    return session.launched[0]


def captured_hooks(script: Mapping[str, Any], path: str | None = None) -> TaskHooks:
    """The callbacks of a run's stored script (run from ``path``, the bundle's copy, when given); captured
    once per process, however many threads ask at once."""
    with _ONE_SCRIPT:
        return _captured_hooks(json.dumps(dict(script), sort_keys=True), path)


@lru_cache(maxsize=16)
def _captured_hooks(script_json: str, path: str | None) -> TaskHooks:
    script = json.loads(script_json)
    ref = ScriptRef.from_dict({**script, "path": path or script["path"]})
    session = run_script(ref, CaptureHost(), script.get("cfg"))
    mephisto, shared = session.launched[0]
    return hooks_from(shared, ref.path, hosted_runner(session, mephisto))


def hosted_runner(session: ScriptSession, mephisto: Mapping[str, Any]) -> Any:
    """The TaskRunner class of the blueprint the script registered for the run's blueprint type, or of
    the provided blueprint of that type that has one (``parlai_chat``), if any."""
    blueprint = mephisto.get("blueprint") or {}
    blueprint_type = str(blueprint.get("_blueprint_type") or "")
    registered = session.blueprints.get(blueprint_type)
    if registered is None and blueprint_type == BLUEPRINT_TYPE_PARLAI_CHAT:
        registered = ParlAIChatBlueprint
    runner = getattr(registered, "TaskRunnerClass", None)
    if runner is None:
        return None
    if not runner.hosts_units():
        raise ConfigError(f"{runner.__name__} has neither is_concurrent = True (run_assignment) nor its own "
                          "run_unit: mephisto-dist hosts a TaskRunner that runs assignments or units")
    return runner


def hooks_from(shared: Any, path: str | None = None, task_runner: Any = None) -> TaskHooks:
    """A shared state's callbacks with Mephisto's signatures, as the hooks the web and workers call."""
    onboarding_inputs = dict(getattr(shared, "onboarding_data", None) or {})
    validate = getattr(shared, "validate_onboarding", accept_onboarding)
    can_do = getattr(shared, "worker_can_do_unit", any_worker_any_unit)
    submitted = getattr(shared, "on_unit_submitted", ignore_unit)

    def validate_onboarding(outputs: dict[str, Any]) -> Any:
        return validate({"inputs": onboarding_inputs, "outputs": outputs})

    def worker_can_do_unit(worker_name: str, unit_data: dict[str, Any]) -> Any:
        return can_do(Worker(worker_name), Unit(None, 0, unit_data, "launched"))

    def on_unit_submitted(event: SubmittedUnit) -> Any:
        return submitted(unit_view(event))

    return TaskHooks(
        path=path,
        screening_data=_screening_data(getattr(shared, "screening_data_factory", False)),
        gold=_gold_hooks(shared),
        validate_onboarding=None if validate is accept_onboarding else validate_onboarding,
        worker_can_do_unit=None if can_do is any_worker_any_unit else worker_can_do_unit,
        on_unit_submitted=None if submitted is ignore_unit else on_unit_submitted,
        onboarding_data=onboarding_inputs,
        task_config=dict(getattr(shared, "task_config", None) or {}),
        function_registry=dict(getattr(shared, "function_registry", None) or {}),
        task_runner=task_runner,
        shared_state=shared if task_runner is not None else None,
    )


def _screening_data(factory: Any) -> Callable[[], dict[str, Any] | None] | None:
    """Next items of a screening-data generator, one caller at a time (web requests run in threads)."""
    if not isinstance(factory, types.GeneratorType):
        return None  # False: screen on real units
    lock = threading.Lock()

    def next_data() -> dict[str, Any] | None:
        with lock:
            try:
                item = next(factory)
            except StopIteration:
                return None
        if not isinstance(item, dict):
            raise TypeError(f"screening_data_factory yielded {type(item).__name__}, not a dict")
        return dict(item)

    return next_data


def _gold_hooks(shared: Any) -> GoldHooks | None:
    get_gold = getattr(shared, "get_gold_for_worker", None)
    if get_gold is None:
        return None

    def data_for(worker_name: str, worker_id: int) -> dict[str, Any]:
        return dict(get_gold(Worker(worker_name, worker_id)))

    return GoldHooks(data_for, shared.worker_needs_gold, shared.worker_qualifies)


def unit_view(event: SubmittedUnit) -> Unit:
    worker = Worker(event.worker_name or "", event.worker_id, event.qualifications)
    agent = Agent(event.agent_id, worker, AgentState(dict(event.unit_data), dict(event.outputs)),
                  AgentState.STATUS_COMPLETED)
    unit = Unit(event.unit_id, event.unit_index, dict(event.unit_data), event.status, agent)
    agent._unit = unit
    return unit
