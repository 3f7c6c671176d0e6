"""A run's stored config, typed: :class:`RunConfig`, parsed once from ``TaskRun.config`` (the loader's
:meth:`TaskConfig.as_dict` plus the run's task script and tips) so that no module reads it as raw dicts
or repeats a default.

Parsing is lenient and cheap (no validation: the config was validated when the run was created, and runs
made by older versions or by tests may lack keys); every default is the one the argument tables
(:mod:`.arguments`) declare. Where it is hot, parse once per run and keep it (the web process's
``RunContext`` holds its run's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mephisto_dist.config.arguments import (
    LOCAL_ARCHITECT,
    MISSING,
    STATIC_TASK,
    TASK_RUN,
    Section,
)

SCRIPT_KEY: Final = "script"
"""Where a run's stored config keeps the task script it was launched from (``mephisto_dist.blueprints.hooks``)."""
HOSTS_ASSIGNMENTS: Final = "hosts_assignments"
"""Key of the stored script: True when the script registered a TaskRunner that runner workers host (the
attached ``run`` starts one; ``mephisto_dist.runners.assignments``)."""
FRONTEND_KEY: Final = "frontend"
"""Where a run's stored config keeps what its page shows from the task folder's files, read at launch
(``mephisto_dist.blueprints.stored_frontend``: parlai_chat's task description)."""
TIPS_KEY: Final = "tips"
"""Where a run's stored config keeps its tips (``mephisto_dist.config.tips``)."""
UNPAID: Final = 0.0
"""The pay of a run whose stored config names no ``task_reward`` (only hand-made ones: it is required)."""


def declared_default(section: Section, dest: str) -> Any:
    """The default the argument tables declare for ``dest`` of ``section``."""
    argument = section.argument(dest)
    assert argument is not None and argument.default is not MISSING, f"{section.name}.{dest} has no default"
    return argument.default


def _section(stored: Mapping[str, Any], kind: str) -> dict[str, Any]:
    given = stored.get(kind)
    return dict(given) if isinstance(given, Mapping) else {}


@dataclass(frozen=True)
class BlueprintSection:
    blueprint_type: str
    args: Mapping[str, Any]
    """Every stored ``mephisto.blueprint`` argument (``_blueprint_type`` too), as blueprints read them."""
    block_qualification: str | None
    qualifications: tuple[Mapping[str, Any], ...]
    units_per_assignment: int

    @classmethod
    def parse(cls, args: dict[str, Any]) -> BlueprintSection:
        return cls(str(args.get("_blueprint_type") or STATIC_TASK.name), args,
                   str(args["block_qualification"]) if args.get("block_qualification") else None,
                   tuple(args.get("qualifications") or ()),
                   int(args.get("units_per_assignment") or declared_default(STATIC_TASK, "units_per_assignment")))


@dataclass(frozen=True)
class ArchitectSection:
    args: Mapping[str, Any]
    """Every stored ``mephisto.architect`` argument, as the run's architect reads them."""
    port: int

    @classmethod
    def parse(cls, args: dict[str, Any]) -> ArchitectSection:
        return cls(args, int(args.get("port") or declared_default(LOCAL_ARCHITECT, "port")))


@dataclass(frozen=True)
class ProviderSection:
    args: Mapping[str, Any]
    """Every stored ``mephisto.provider`` argument (the requester's access filled in at creation)."""


@dataclass(frozen=True)
class TaskSection:
    args: Mapping[str, Any]
    """Every stored ``mephisto.task`` argument, as a provider publishing a unit reads them."""
    task_name: str
    task_reward: float
    allowed_concurrent: int
    maximum_units_per_worker: int
    max_num_concurrent_units: int
    assignment_duration_s: int
    task_lifetime_s: int
    no_submission_patience_s: int
    partner_wait_s: int = 600
    submission_timeout_s: int = 600
    runner_restarts: int = 0

    @classmethod
    def parse(cls, args: dict[str, Any]) -> TaskSection:
        def number(dest: str) -> int:
            return int(args.get(dest) or declared_default(TASK_RUN, dest))

        return cls(args, str(args.get("task_name") or ""), float(args.get("task_reward") or UNPAID),
                   number("allowed_concurrent"), number("maximum_units_per_worker"),
                   number("max_num_concurrent_units"), number("assignment_duration_in_seconds"),
                   number("task_lifetime_in_seconds"), number("no_submission_patience"),
                   int(args.get("partner_wait_in_seconds", declared_default(TASK_RUN, "partner_wait_in_seconds"))),
                   int(args.get("submission_timeout", declared_default(TASK_RUN, "submission_timeout"))),
                   int(args.get("runner_restarts", declared_default(TASK_RUN, "runner_restarts"))))


@dataclass(frozen=True)
class RunConfig:
    blueprint: BlueprintSection
    architect: ArchitectSection
    provider: ProviderSection
    task: TaskSection
    script: Mapping[str, Any] | None
    """The task script the run was launched from, if any."""
    tips: tuple[Mapping[str, Any], ...]
    stored: Mapping[str, Any]
    """The stored config itself, for the loader's :meth:`TaskConfig.from_dict`."""

    @classmethod
    def parse(cls, stored: Mapping[str, Any] | None) -> RunConfig:
        stored = stored or {}
        script = stored.get(SCRIPT_KEY)
        return cls(BlueprintSection.parse(_section(stored, "blueprint")),
                   ArchitectSection.parse(_section(stored, "architect")),
                   ProviderSection(_section(stored, "provider")),
                   TaskSection.parse(_section(stored, "task")),
                   script if isinstance(script, Mapping) else None,
                   tuple(stored.get(TIPS_KEY) or ()), stored)

    @property
    def hosts_assignments(self) -> bool:
        """Whether the run's assignments run on a runner worker (a task script's own TaskRunner)."""
        return bool(self.script and self.script.get(HOSTS_ASSIGNMENTS))

    def launch_args(self) -> dict[str, Any]:
        """The ``mephisto.task`` arguments with the blueprint's qualification requirements and block
        qualification, which a remote provider turns into its own (MTurk's QualificationRequirements)."""
        return {**self.task.args, "qualifications": list(self.blueprint.qualifications),
                "block_qualification": self.blueprint.block_qualification}
