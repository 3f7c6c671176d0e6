"""``mephisto-dist run`` on a task script (``run_task.py``): the script runs unchanged over the
compatibility layer, and this module is its host: ``launch_task_run`` validates and (detached) creates
the run, ``wait_for_runs_then_shutdown`` runs it attached with the progress display."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Final

from mephisto_dist.cli.console import console
from mephisto_dist.compat.mixins import check_gold_args, check_screening_args
from mephisto_dist.compat.runner import hosted_runner, run_script
from mephisto_dist.compat.session import ScriptRef, current
from mephisto_dist.config import TaskConfig
from mephisto_dist.config.run_config import HOSTS_ASSIGNMENTS
from mephisto_dist.errors import ConfigError
from mephisto_dist.runs.preparation import PreparedRun, prepare_config
from mephisto_dist.settings import Settings

MAX_STATIC_ROWS: Final = 1_000_000
"""``static_task_data`` is read whole at launch: a generator longer than this is refused (Mephisto let
an endless generator feed a run forever; here every assignment is created up front)."""


def run_task_script(settings: Settings, script: Path, conf: str | None, overrides: list[str], *,
                    detach: bool, log_dir: Path, quiet: bool = False) -> None:
    ref = ScriptRef(str(script.expanduser().resolve()), conf, tuple(overrides))
    host = LaunchHost(settings, ref, detach=detach, log_dir=log_dir, quiet=quiet)
    run_script(ref, host)
    host.wait()  # a script that never waits still gets its run (Mephisto's operator shut down at exit)


@dataclass
class LaunchHost:
    settings: Settings
    ref: ScriptRef
    detach: bool
    log_dir: Path | None
    quiet: bool = False
    capturing: bool = False
    _prepared: PreparedRun | None = field(default=None, repr=False)
    _done: bool = False

    def launch(self, mephisto: dict[str, Any], shared_state: Any) -> str | None:
        config = script_task_config(self.ref, mephisto, shared_state)
        check_screening_args(config.blueprint, config.task, shared_state)
        check_gold_args(config.blueprint, config.task)
        hosted = hosted_runner(current(), mephisto) is not None
        prepared = prepare_config(config, check_port=False, rows=static_rows(shared_state),
                                  script={**self.ref.as_dict(), "cfg": current().cfg,
                                          HOSTS_ASSIGNMENTS: hosted})
        self._prepared = prepared
        if self.detach:
            self.wait()
        return None

    def wait(self) -> None:
        if self._prepared is None or self._done:
            return
        self._done = True
        from mephisto_dist.cli.run import launch_prepared

        launch_prepared(self.settings, self._prepared, detach=self.detach, log_dir=self.log_dir, quiet=self.quiet)

    def say(self, text: str) -> None:
        console.print(text, soft_wrap=True)


def script_task_config(ref: ScriptRef, mephisto: dict[str, Any], shared_state: Any) -> TaskConfig:
    """The run config the script launched (it may have changed ``cfg.mephisto``), with the shared state's
    qualification requirements added to the blueprint's."""
    config = TaskConfig.from_dict({"task_dir": str(ref.task_dir), "conf_name": ref.conf or "script", **mephisto})
    extra = list(getattr(shared_state, "qualifications", None) or [])
    if not extra:
        return config
    return replace(config, blueprint={**config.blueprint,
                                      "qualifications": [*(config.blueprint.get("qualifications") or []), *extra]})


def static_rows(shared_state: Any) -> list[dict[str, Any]] | None:
    data = getattr(shared_state, "static_task_data", None)
    if data is None:
        return None
    if not isinstance(data, Iterable):
        raise ConfigError(f"static_task_data must be a list or a generator, found {type(data).__name__}")
    rows = list(islice(data, MAX_STATIC_ROWS + 1))
    if len(rows) > MAX_STATIC_ROWS:
        raise ConfigError(f"static_task_data yields more than {MAX_STATIC_ROWS} items; mephisto-dist creates "
                          "every assignment at launch")
    return rows or None
