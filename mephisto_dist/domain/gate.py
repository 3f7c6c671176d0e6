"""The gate a worker passes before a unit of a run, decided in one place from one snapshot: the run's rules
and the worker's standing (blocked or not, and their grants, qualification name -> value, read once).

In Mephisto's order: a blocked worker, one holding the run's block qualification, one missing a
requirement or one who failed the run's onboarding is refused; one who has not done the onboarding is sent
to it; with a screening generator, one without the pass qualification gets a screening unit; with golds,
one over ``max_incorrect_golds`` is refused and one the script's schedule says needs a gold gets one;
everyone else gets a real unit. The I/O around it (reading the snapshot, starting onboarding, making a
screening or gold unit) is ``work.claims``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mephisto_dist.domain.qualifications import FAILED_SUFFIX, Requirement, meets_requirements

NOT_QUALIFIED: Final = "You are not qualified to work on this task."
ONBOARDING_FAILED: Final = "You did not pass the qualification for this task, so you cannot work on it."

GoldDecision = Callable[[int, int, int, int], bool]
"""The script's ``worker_needs_gold`` / ``worker_qualifies`` over (completed, right, wrong, bound)."""


class Standing(StrEnum):
    """Where a worker stands with a run's onboarding qualification."""

    PASSED = "passed"
    FAILED = "failed"
    NEEDED = "needed"


def onboarding_standing(granted: Mapping[str, int], qualification: str) -> Standing:
    """As Mephisto's ``is_qualified`` / ``is_disqualified``: a non-zero value passed, zero (or
    ``<name>-failed``) failed, nothing yet means onboarding."""
    if qualification + FAILED_SUFFIX in granted:
        return Standing.FAILED
    value = granted.get(qualification)
    if value is None:
        return Standing.NEEDED
    return Standing.PASSED if value else Standing.FAILED


@dataclass(frozen=True)
class GoldRules:
    """Mephisto's gold schedule: the counts under ``<base>-...`` and the script's two decisions."""

    base: str
    min_golds: int
    max_incorrect: int
    needs_gold: GoldDecision
    qualifies: GoldDecision

    def stats(self, granted: Mapping[str, int]) -> tuple[int, int, int]:
        """(units completed, golds right, golds wrong) from the worker's grants."""
        return (granted.get(f"{self.base}-completed-count", 0), granted.get(f"{self.base}-correct-golds", 0),
                granted.get(f"{self.base}-wrong-golds", 0))


@dataclass(frozen=True)
class GateRules:
    """A run's rules for who may work on it (from its config and its task script)."""

    provider_type: str
    block_qualification: str | None = None
    requirements: tuple[Requirement, ...] = ()
    onboarding_qualification: str | None = None
    screening_qualification: str | None = None
    """The pass qualification, when the task script generates screening units."""
    golds: GoldRules | None = None

    @property
    def reads_grants(self) -> bool:
        """Whether a worker's grants must be read before they get a unit (one indexed query)."""
        return bool(self.block_qualification or self.requirements or self.onboarding_qualification
                    or self.screening_qualification or self.golds)


class Next(StrEnum):
    REFUSED = "refused"
    ONBOARDING = "onboarding"
    SCREENING = "screening"
    GOLD = "gold"
    UNIT = "unit"


@dataclass(frozen=True)
class Verdict:
    next: Next
    reason: str | None = None
    """Why the worker is refused (their page shows it)."""


UNIT: Final = Verdict(Next.UNIT)


def refusal(rules: GateRules, granted: Mapping[str, int], *, blocked: bool = False) -> str | None:
    """Why a worker with this standing may not work on the run at all, or ``None``."""
    if blocked or (rules.block_qualification and rules.block_qualification in granted):
        return NOT_QUALIFIED
    if rules.requirements and not meets_requirements(granted, rules.requirements,
                                                      provider_type=rules.provider_type):
        return NOT_QUALIFIED
    name = rules.onboarding_qualification
    if name and onboarding_standing(granted, name) == Standing.FAILED:
        return ONBOARDING_FAILED
    return None


def decide(rules: GateRules, granted: Mapping[str, int], *, blocked: bool = False) -> Verdict:
    """What the worker gets next: a refusal (and why), onboarding, a screening unit, a gold, or a unit."""
    reason = refusal(rules, granted, blocked=blocked)
    if reason is not None:
        return Verdict(Next.REFUSED, reason)
    name = rules.onboarding_qualification
    if name and onboarding_standing(granted, name) == Standing.NEEDED:
        return Verdict(Next.ONBOARDING)
    if rules.screening_qualification and rules.screening_qualification not in granted:
        return Verdict(Next.SCREENING)
    golds = rules.golds
    if golds is not None:
        completed, correct, wrong = golds.stats(granted)
        if not golds.qualifies(completed, correct, wrong, golds.max_incorrect):
            return Verdict(Next.REFUSED, NOT_QUALIFIED)
        if golds.needs_gold(completed, correct, wrong, golds.min_golds):
            return Verdict(Next.GOLD)
    return UNIT
