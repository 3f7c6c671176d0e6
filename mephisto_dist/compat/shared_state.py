"""``SharedTaskState`` and ``SharedStaticTaskState``: what a script hands to ``launch_task_run`` besides
the config (data from Python, callbacks, qualification requirements).

Every callback defaults to one of the module-level functions below, so the layer can tell a callback
the script set from the default and skip the work for one it did not set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mephisto_dist.compat.data_model import AgentState, Unit, Worker

__all__ = ["AgentState", "SharedStaticTaskState", "SharedTaskState"]


def accept_onboarding(onboarding_data: Any) -> bool:
    return True


def any_worker_any_unit(worker: Worker, unit: Unit) -> bool:
    return True


def ignore_unit(unit: Unit) -> None:
    return None


def blank_screening_data() -> Iterator[dict[str, Any]]:
    while True:
        yield {}


def first_gold(worker: Worker) -> dict[str, Any]:
    return {}


@dataclass
class SharedTaskState:
    onboarding_data: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)
    validate_onboarding: Callable[[Any], bool] = accept_onboarding
    qualifications: list[Any] = field(default_factory=list)
    worker_can_do_unit: Callable[[Worker, Unit], bool] = any_worker_any_unit
    on_unit_submitted: Callable[[Unit], None] = ignore_unit
    mturk_specific_qualifications: list[Any] = field(default_factory=list)
    prolific_specific_qualifications: list[Any] = field(default_factory=list)


def worker_needs_gold(units_completed: int, num_correct: int, num_incorrect: int, min_golds: int) -> bool:
    from mephisto_dist.compat.mixins import worker_needs_gold as needs  # the mixin module owns the rule

    return needs(units_completed, num_correct, num_incorrect, min_golds)


def worker_qualifies(units_completed: int, num_correct: int, num_incorrect: int, max_incorrect_golds: int) -> bool:
    return num_incorrect <= max_incorrect_golds


@dataclass
class SharedStaticTaskState(SharedTaskState):
    static_task_data: Iterable[Any] = field(default_factory=list)
    screening_data_factory: Any = field(default_factory=blank_screening_data)
    get_gold_for_worker: Callable[[Worker], dict[str, Any]] = first_gold
    worker_needs_gold: Callable[[int, int, int, int], bool] = worker_needs_gold
    worker_qualifies: Callable[[int, int, int, int], bool] = worker_qualifies
