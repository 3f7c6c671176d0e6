"""The blueprint mixins' helpers task scripts call: ``ScreenTaskRequired``, ``UseGoldUnit`` and
``OnboardingRequired`` (validation functions for ``on_unit_submitted`` and the requirements they add),
with Mephisto's rules, written against the views of :mod:`.data_model`."""

from __future__ import annotations

import math
import random
import types
from collections.abc import Callable, Iterator
from typing import Any

from mephisto_dist.compat.data_model import GOLD_UNIT_INDEX, AgentState, Unit, Worker
from mephisto_dist.compat.qualification import QUAL_NOT_EXIST, make_qualification_dict
from mephisto_dist.compat.shared_state import blank_screening_data
from mephisto_dist.domain.qualifications import FAILED_SUFFIX
from mephisto_dist.errors import ConfigError

GoldFactory = Callable[[Worker], dict[str, Any]]


def _blueprint_arg(args: Any, name: str) -> Any:
    blueprint = args["blueprint"] if isinstance(args, dict) else args.blueprint
    return blueprint.get(name)


def blank_generator() -> Iterator[dict[str, Any]]:
    return blank_screening_data()


class ScreenTaskRequired:
    """A new worker's first unit screens them: passing grants ``passed_qualification_name``, failing
    grants the run's ``block_qualification``."""

    @classmethod
    def create_validation_function(cls, args: Any, screen_unit: Callable[[Unit], bool]) -> Callable[[Unit], None]:
        passed = _blueprint_arg(args, "passed_qualification_name")
        failed = _blueprint_arg(args, "block_qualification")
        max_screening_units = _blueprint_arg(args, "max_screening_units") or 0

        def validate_screening(unit: Unit) -> None:
            if max_screening_units > 0 and unit.unit_index >= 0:
                return  # with screening units, only they are validated
            agent = unit.get_assigned_agent()
            if agent is None:
                return
            worker = agent.get_worker()
            if max_screening_units == 0 and worker.is_qualified(passed):
                return  # screening on real units: a worker who passed is not screened again
            verdict = screen_unit(unit)
            if verdict is True:
                worker.grant_qualification(passed)
            elif verdict is False:
                worker.grant_qualification(failed)

        return validate_screening

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        return [make_qualification_dict(_blueprint_arg(args, "block_qualification"), QUAL_NOT_EXIST, None)]


def get_gold_factory(golds: list[dict[str, Any]]) -> GoldFactory:
    """Golds for each worker in a random order, each once before any repeats (per process)."""
    if not golds:
        raise ValueError("get_gold_factory needs at least one gold")
    remaining: dict[str | None, list[int]] = {}

    def get_gold_for_worker(worker: Worker) -> dict[str, Any]:
        left = remaining.get(worker.db_id)
        if not left:
            left = remaining[worker.db_id] = list(range(len(golds)))
        chosen = left.pop(random.randrange(len(left)))
        return golds[chosen]

    return get_gold_for_worker


def worker_needs_gold(units_completed: int, num_correct: int, num_incorrect: int, min_golds: int) -> bool:
    """Golds until ``min_golds`` are right, then a share shrinking with the units done (about 5% at
    100 units, 1% at 1000), as Mephisto schedules them."""
    if num_correct < min_golds:
        return True
    excess = num_correct - (min_golds + num_incorrect)
    return excess < math.ceil(math.pow(math.log10(units_completed + 1), 2.2)) - 1




class UseGoldUnit:
    """Golds mixed into a worker's units and scored through ``<base>-correct-golds`` and
    ``<base>-wrong-golds``; ``<base>-completed-count`` counts their other units."""

    @staticmethod
    def get_current_qual_or_default(worker: Worker, qual_name: str, default_val: Any = 0) -> Any:
        found = worker.get_granted_qualification(qual_name)
        return default_val if found is None else found.value

    @classmethod
    def create_validation_function(cls, args: Any, screen_unit: Callable[[Unit], bool]) -> Callable[[Unit], None]:
        base = _blueprint_arg(args, "gold_qualification_base")
        correct, wrong, count = f"{base}-correct-golds", f"{base}-wrong-golds", f"{base}-completed-count"

        def validate_gold(unit: Unit) -> None:
            # Each count is one statement, once per unit (Worker.count_unit): Mephisto's read-then-grant
            # loses a count to a concurrent one and adds one again when the event is delivered twice.
            agent = unit.get_assigned_agent()
            if unit.unit_index != GOLD_UNIT_INDEX:
                if agent is not None and agent.get_status() == AgentState.STATUS_COMPLETED:
                    agent.get_worker().count_unit(count, unit)
                return
            if agent is None:
                return
            verdict = screen_unit(unit)
            if verdict is True:
                agent.get_worker().count_unit(correct, unit)
            elif verdict is False:
                agent.get_worker().count_unit(wrong, unit)

        return validate_gold

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        base = _blueprint_arg(args, "gold_qualification_base")
        return [make_qualification_dict(f"{base}-wrong-golds", QUAL_NOT_EXIST, None)]


class OnboardingRequired:
    @staticmethod
    def get_failed_qual(qual_name: str) -> str:
        return qual_name + FAILED_SUFFIX

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        name = _blueprint_arg(args, "onboarding_qualification")
        if name is None:
            return []
        return [make_qualification_dict(cls.get_failed_qual(name), QUAL_NOT_EXIST, None)]


def check_screening_args(blueprint: Any, task: Any, shared_state: Any) -> None:
    """Mephisto's ``ScreenTaskRequired.assert_mixin_args``, as one-line errors at launch."""
    if not blueprint.get("use_screening_task"):
        return
    key = "mephisto.blueprint"
    if blueprint.get("use_golds"):
        raise ConfigError("gold units cannot be used with screening units")
    if task.get("allowed_concurrent") != 1:
        raise ConfigError("use_screening_task needs mephisto.task.allowed_concurrent=1, so that a worker is "
                          "screened before moving on to real units")
    for name in ("passed_qualification_name", "block_qualification", "max_screening_units"):
        if blueprint.get(name) is None:
            raise ConfigError(f"use_screening_task needs {key}.{name}")
    factory = getattr(shared_state, "screening_data_factory", False)
    if factory is not False:
        if not isinstance(factory, types.GeneratorType):
            raise ConfigError("SharedStaticTaskState.screening_data_factory must be a generator (or False to "
                              "screen on real units)")
        if blueprint["max_screening_units"] <= 0:
            raise ConfigError(f"{key}.max_screening_units must be above 0 with a screening_data_factory")
    elif blueprint["max_screening_units"] != 0:
        raise ConfigError(f"{key}.max_screening_units must be 0 when screening on real units "
                          "(screening_data_factory=False)")



def check_gold_args(blueprint: Any, task: Any) -> None:
    """Mephisto's ``UseGoldUnit.assert_mixin_args``, as one-line errors at launch."""
    if not blueprint.get("use_golds"):
        return
    if task.get("allowed_concurrent") != 1:
        raise ConfigError("use_golds needs mephisto.task.allowed_concurrent=1, so that golds are done in order")
    if blueprint.get("use_screening_task"):
        raise ConfigError("gold units cannot be used with screening units")
    for name in ("max_gold_units", "gold_qualification_base"):
        if blueprint.get(name) is None:
            raise ConfigError(f"use_golds needs mephisto.blueprint.{name}")
