"""Gold units (Mephisto's ``UseGoldUnit``): with ``use_golds``, units whose answer is known are mixed into a
worker's queue, made for them from the task script's ``get_gold_for_worker`` (``unit_index`` -2, at most
``max_gold_units`` per run, counted on the run's row by ``screening.take_made_unit``). The script's validator
(``UseGoldUnit.create_validation_function``, on Celery) counts each worker's golds right and wrong and
their other units in ``<base>-correct-golds``, ``<base>-wrong-golds`` and ``<base>-completed-count``.
From those counts, the script's ``worker_needs_gold`` (many golds first, then fewer) decides whether the
next unit is a gold, and ``worker_qualifies`` (at most ``max_incorrect_golds`` wrong) whether the worker
may go on at all, as Mephisto decides them (``domain.gate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

GOLD_UNIT_INDEX: Final = -2


@dataclass(frozen=True)
class Golds:
    base: str
    max_units: int
    min_golds: int
    max_incorrect: int



def golds_of(blueprint_args: Mapping[str, Any]) -> Golds | None:
    if not blueprint_args.get("use_golds"):
        return None
    return Golds(str(blueprint_args.get("gold_qualification_base") or ""),
                 int(blueprint_args.get("max_gold_units") or 0), int(blueprint_args.get("min_golds") or 0),
                 int(blueprint_args.get("max_incorrect_golds") or 0))
