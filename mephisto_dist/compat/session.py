"""The script being run: its reference (path, config name, overrides), the mode, and what it launched.

A run stores its :class:`ScriptRef` so that every process can run the same script with the same config.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mephisto_dist.errors import ConfigError


@dataclass(frozen=True)
class ScriptRef:
    """Which script, and the command line it was given (``conf=NAME`` and overrides)."""

    path: str
    conf: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def task_dir(self) -> Path:
        return Path(self.path).parent

    @property
    def name(self) -> str:
        return Path(self.path).name

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "conf": self.conf, "overrides": list(self.overrides)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScriptRef:
        path = data.get("path")
        if not isinstance(path, str):
            raise ConfigError("the stored task config names no task script path")
        conf = data.get("conf")
        return cls(path, conf if isinstance(conf, str) else None,
                   tuple(str(item) for item in data.get("overrides") or ()))


class CaptureComplete(BaseException):
    """Raised by ``launch_task_run`` in capture mode: the script has given what was needed."""


class ScriptHost(Protocol):
    """Who runs the script: the launching CLI, or a process that only captures callbacks."""

    capturing: bool
    log_dir: Path | None

    def launch(self, mephisto: dict[str, Any], shared_state: Any) -> str | None:
        """Create (or, capturing, record) the TaskRun for this config and shared state."""
        ...

    def wait(self) -> None:
        """``wait_for_runs_then_shutdown``: watch the run to its end, or return at once."""
        ...

    def say(self, text: str) -> None:
        """Show the user a progress line."""
        ...


@dataclass
class ScriptSession:
    ref: ScriptRef
    host: ScriptHost
    launched: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    host_error: BaseException | None = None
    stored_cfg: dict[str, Any] | None = None
    """Capturing a launched run: the ``cfg`` the script received at launch, given to it again."""
    cfg: dict[str, Any] | None = None
    """The ``cfg`` given to the script this time (stored with the run at launch)."""
    blueprints: dict[str, Any] = field(default_factory=dict)
    """Blueprint classes the script registered (``@register_mephisto_abstraction()``), by type."""

    def call_host(self, what: str, *args: Any) -> Any:
        """Call the host, remembering its exception so the runner passes it on unchanged."""
        try:
            return getattr(self.host, what)(*args)
        except BaseException as error:
            self.host_error = error
            raise


_current: ScriptSession | None = None
_lock = threading.RLock()


def current() -> ScriptSession:
    """The session of the script being run; a one-line error outside ``mephisto-dist``."""
    if _current is None:
        raise ConfigError("this Mephisto task script API works only inside `mephisto-dist run TASK_DIR`")
    return _current


@contextmanager
def active(session: ScriptSession) -> Iterator[ScriptSession]:
    """Make ``session`` current; scripts run one at a time per process."""
    global _current
    with _lock:
        previous, _current = _current, session
        try:
            yield session
        finally:
            _current = previous
