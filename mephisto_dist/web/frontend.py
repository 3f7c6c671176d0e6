"""What ``/task_config.json`` returns: the blueprint's frontend args for a run's stored config, with the
task's own ``task_config`` (hooks file or script shared state) merged in last, as Mephisto did."""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse

from mephisto_dist.blueprints import blueprint_module
from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.blueprints.runner import blueprint_type_of
from mephisto_dist.config import TaskConfig
from mephisto_dist.config.run_config import FRONTEND_KEY, RunConfig
from mephisto_dist.work.claims import RunContext

log = logging.getLogger(__name__)

MEPHISTO_TASK_VERSION = "2.0.3"
"""The version ``mephisto-task`` reports, as Mephisto's router serves it (``CURR_MEPHISTO_TASK_VERSION``).

The page asks for ``/task_config.json?mephisto_task_version=<its libVersion>`` and warns in the console
when the answer's ``mephisto_task_version`` differs. Its libVersion is read from package.json when the
package is built, and the 2.0.4 release on npm (the current one) was built reporting 2.0.3, as Mephisto's
own router expects: so 2.0.3 is what a page on the current package reports."""
VERSIONS_TOLD_AT_MOST = 10  # a client names the version: the log says a few, not whatever it sends


def frontend_config(config: dict[str, Any], hooks: TaskHooks) -> dict[str, Any]:
    parsed = RunConfig.parse(config)
    module = blueprint_module(parsed.blueprint.blueprint_type)
    args: dict[str, Any] = module.frontend_args(TaskConfig.from_dict(config), hooks)
    stored = config.get(FRONTEND_KEY) or {}
    return {**args, **stored, **hooks.task_config, "tips": list(parsed.tips),
            "mephisto_task_version": MEPHISTO_TASK_VERSION}


def index_page(config: dict[str, Any]) -> str | None:
    """The run's own page at ``/`` (a React task's index.html), or None for the static HTML shell."""
    page = getattr(blueprint_module(blueprint_type_of(config)), "INDEX_PAGE", None)
    return page if isinstance(page, str) else None


class RenderedFrontend:
    """``/task_config.json`` of the run served, rendered once per ``RunContext``.

    The resolver makes a new ``RunContext`` whenever it reads the run again, so a run whose stored config
    changed is rendered afresh. Nothing in it changes under one ``RunContext``: the config is the run's
    stored row (its tips were read at launch and stored in it), and the hooks' ``task_config`` is read
    once per process (the hooks file imported, or the task script captured) and is not changed after:
    hooks keep no state, and each process has its own copy anyway."""

    def __init__(self) -> None:
        self._rendered: tuple[RunContext, dict[str, Any], bytes] | None = None
        self._versions_told: set[str] = set()

    def check_client_version(self, version: str | None) -> None:
        """Log, once per version and process, a page whose ``mephisto-task`` reports another version than
        the one served (Mephisto's router forwards the same warning to the operator)."""
        if version is None:
            return
        version = version[:40]
        told = self._versions_told
        if version == MEPHISTO_TASK_VERSION or version in told or len(told) >= VERSIONS_TOLD_AT_MOST:
            return
        told.add(version)
        log.warning("a task page uses mephisto-task %r, but this server speaks for %s: the page warns of a "
                    "version mismatch, and may behave unexpectedly", version, MEPHISTO_TASK_VERSION)

    def config(self, run: RunContext) -> dict[str, Any]:
        """``frontend_config`` of the run (shared: do not change it)."""
        return self._render(run)[1]

    def body(self, run: RunContext) -> bytes:
        """The JSON body of ``/task_config.json``, as ``JSONResponse`` writes it."""
        return self._render(run)[2]

    def _render(self, run: RunContext) -> tuple[RunContext, dict[str, Any], bytes]:
        rendered = self._rendered
        if rendered is not None and rendered[0] is run:
            return rendered
        config = frontend_config(run.config, run.hooks)
        # One tuple, replaced whole: a thread reading it sees one run's rendering or another's.
        self._rendered = (run, config, bytes(JSONResponse(config).body))
        return self._rendered
