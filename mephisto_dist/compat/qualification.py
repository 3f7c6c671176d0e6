"""``mephisto.data_model.qualification`` and ``mephisto.utils.qualifications``: the comparators and the
requirement dicts a task script builds (checked by :class:`mephisto_dist.domain.qualifications.Requirement`)."""

from __future__ import annotations

from typing import Any, Final

from mephisto_dist.domain.qualifications import Comparator

QUAL_GREATER: Final = Comparator.GREATER_THAN.value
QUAL_GREATER_EQUAL: Final = Comparator.GREATER_THAN_OR_EQUAL_TO.value
QUAL_LESS: Final = Comparator.LESS_THAN.value
QUAL_LESS_EQUAL: Final = Comparator.LESS_THAN_OR_EQUAL_TO.value
QUAL_EQUAL: Final = Comparator.EQUAL_TO.value
QUAL_NOT_EQUAL: Final = Comparator.NOT_EQUAL_TO.value
QUAL_IN_LIST: Final = Comparator.IN.value
QUAL_NOT_IN_LIST: Final = Comparator.NOT_IN.value
QUAL_EXISTS: Final = Comparator.EXISTS.value
QUAL_NOT_EXIST: Final = Comparator.DOES_NOT_EXIST.value

COMPARATOR_OPERATIONS: Final = {comparator.value: comparator.value for comparator in Comparator}


def make_qualification_dict(qualification_name: str, comparator: str, value: Any = None,
                            applicable_providers: list[str] | None = None) -> dict[str, Any]:
    """A requirement on a worker's qualification, in the shape a run's ``qualifications`` take."""
    return {"qualification_name": qualification_name, "comparator": comparator, "value": value,
            "applicable_providers": applicable_providers}
