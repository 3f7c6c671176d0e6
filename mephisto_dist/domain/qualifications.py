"""Qualification requirements as pure decisions: Mephisto's comparators, a task's requirements, and
whether a worker's grants meet them (:func:`meets_requirements`), so the hot path can call them on data it
already holds."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mephisto_dist.errors import ConfigError

MAX_NAME_CHARS = 255
FAILED_SUFFIX = "-failed"
"""A worker who fails onboarding gets ``<onboarding_qualification>-failed`` as well."""


class Comparator(StrEnum):
    """Mephisto's qualification comparators (``mephisto.data_model.qualification``)."""

    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    EQUAL_TO = "EqualTo"
    NOT_EQUAL_TO = "NotEqualTo"
    GREATER_THAN = "GreaterThan"
    GREATER_THAN_OR_EQUAL_TO = "GreaterThanOrEqualTo"
    LESS_THAN = "LessThan"
    LESS_THAN_OR_EQUAL_TO = "LessThanOrEqualTo"
    IN = "In"
    NOT_IN = "NotIn"


_COMPARE: dict[Comparator, Callable[[int, Any], bool]] = {
    Comparator.EQUAL_TO: operator.eq,
    Comparator.NOT_EQUAL_TO: operator.ne,
    Comparator.GREATER_THAN: operator.gt,
    Comparator.GREATER_THAN_OR_EQUAL_TO: operator.ge,
    Comparator.LESS_THAN: operator.lt,
    Comparator.LESS_THAN_OR_EQUAL_TO: operator.le,
    Comparator.IN: lambda granted, values: granted in values,
    Comparator.NOT_IN: lambda granted, values: granted not in values,
}
_LIST_COMPARATORS = frozenset({Comparator.IN, Comparator.NOT_IN})


@dataclass(frozen=True)
class Requirement:
    """One qualification requirement, as Mephisto's ``make_qualification_dict`` writes it."""

    qualification_name: str
    comparator: Comparator
    value: int | tuple[int, ...] | None = None
    applicable_providers: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Requirement:
        """Parse ``{"qualification_name", "comparator", "value", "applicable_providers"}``."""
        name = raw.get("qualification_name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"qualification requirement {dict(raw)!r} has no qualification_name")
        try:
            comparator = Comparator(str(raw.get("comparator")))
        except ValueError:
            known = ", ".join(c.value for c in Comparator)
            raise ConfigError(f"requirement on {name!r}: unknown comparator {raw.get('comparator')!r}; "
                              f"known: {known}") from None
        providers = raw.get("applicable_providers")
        return cls(name, comparator, _requirement_value(name, comparator, raw.get("value")),
                   None if providers is None else tuple(str(p) for p in providers))


def _requirement_value(name: str, comparator: Comparator, value: Any) -> int | tuple[int, ...] | None:
    if comparator in (Comparator.EXISTS, Comparator.DOES_NOT_EXIST):
        return None
    if comparator in _LIST_COMPARATORS:
        if isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
            return tuple(int(v) for v in value)
        raise ConfigError(f"requirement on {name!r}: {comparator.value} needs a list of integers, got {value!r}")
    if _is_int(value):
        return int(value)
    raise ConfigError(f"requirement on {name!r}: {comparator.value} needs an integer value, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def requirement_met(granted: Mapping[str, int], requirement: Requirement) -> bool:
    """Whether a worker holding ``granted`` (name -> value) meets one requirement."""
    held = granted.get(requirement.qualification_name)
    if requirement.comparator == Comparator.EXISTS:
        return held is not None
    if requirement.comparator == Comparator.DOES_NOT_EXIST:
        return held is None
    if held is None:  # every value comparison needs a value to compare
        return False
    return bool(_COMPARE[requirement.comparator](held, requirement.value))


def meets_requirements(
    granted: Mapping[str, int],
    requirements: Iterable[Requirement | Mapping[str, Any]],
    *,
    provider_type: str | None = None,
) -> bool:
    """Whether a worker holding ``granted`` meets every requirement (Mephisto's ``worker_is_qualified``).

    Requirements may be :class:`Requirement` objects or Mephisto's qualification dicts. With
    ``provider_type`` given, a requirement whose ``applicable_providers`` leaves it out is ignored.
    Unlike Mephisto, a requirement on a qualification nobody holds is checked, not skipped.
    """
    for item in requirements:
        requirement = item if isinstance(item, Requirement) else Requirement.from_dict(item)
        providers = requirement.applicable_providers
        if provider_type is not None and providers is not None and provider_type not in providers:
            continue
        if not requirement_met(granted, requirement):
            return False
    return True
