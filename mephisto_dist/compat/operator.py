"""``mephisto.operations.operator.Operator``: hands the script's run config and shared state to the
host (the launching CLI, or a process capturing callbacks)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from mephisto_dist.compat.session import ScriptSession, current
from mephisto_dist.compat.shared_state import SharedStaticTaskState
from mephisto_dist.errors import ConfigError


class Operator:
    def __init__(self, db: Any = None, session: ScriptSession | None = None) -> None:
        self._session = session if session is not None else current()
        self.is_shutdown = False

    def launch_task_run(self, run_config: Any, shared_state: Any = None) -> str | None:
        """Create the TaskRun of ``run_config`` (the script's ``cfg.mephisto``)."""
        mephisto = _plain(run_config)
        shared = shared_state if shared_state is not None else SharedStaticTaskState()
        if self._session.launched:
            raise ConfigError("mephisto-dist runs one task run per script: launch_task_run was called twice")
        self._session.launched.append((mephisto, shared))
        result: str | None = self._session.call_host("launch", mephisto, shared)
        return result

    validate_and_run_config = launch_task_run

    def wait_for_runs_then_shutdown(self, skip_input: bool = True, log_rate: int | None = None) -> None:
        """Attached: the run's progress display until it ends (Ctrl-C as ``mephisto-dist run``);
        detached: returns at once."""
        self._session.call_host("wait")
        self.is_shutdown = True

    def shutdown(self, skip_input: bool = True) -> None:
        self.is_shutdown = True


def _plain(run_config: Any) -> dict[str, Any]:
    if isinstance(run_config, DictConfig):
        container = OmegaConf.to_container(run_config, resolve=True)
    else:
        container = run_config
    if not isinstance(container, dict):
        raise ConfigError("launch_task_run needs the script's cfg.mephisto")
    return {str(key): value for key, value in container.items()}
