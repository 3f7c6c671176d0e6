"""The gate as one pure decision (``domain.gate``): Mephisto's order of refusal, onboarding, screening,
golds and a real unit, from the run's rules and one snapshot of the worker's grants."""

from __future__ import annotations

import pytest

from mephisto_dist.domain.gate import (
    NOT_QUALIFIED,
    ONBOARDING_FAILED,
    GateRules,
    GoldRules,
    Next,
    Standing,
    Verdict,
    decide,
    onboarding_standing,
)
from mephisto_dist.domain.qualifications import Comparator, Requirement


def golds(*, needs: bool, qualifies: bool = True) -> GoldRules:
    return GoldRules("g", min_golds=2, max_incorrect=1,
                     needs_gold=lambda completed, right, wrong, bound: needs,
                     qualifies=lambda completed, right, wrong, bound: qualifies and wrong <= bound)


EVERYTHING = GateRules("mock", block_qualification="blocked", requirements=(Requirement("skill", Comparator.GREATER_THAN_OR_EQUAL_TO, 3),),
                       onboarding_qualification="onboarded", screening_qualification="screened",
                       golds=golds(needs=True))


@pytest.mark.parametrize(("granted", "blocked", "expected"), [
    ({"skill": 5, "onboarded": 1, "screened": 1}, True, Verdict(Next.REFUSED, NOT_QUALIFIED)),
    ({"skill": 5, "onboarded": 1, "screened": 1, "blocked": 0}, False, Verdict(Next.REFUSED, NOT_QUALIFIED)),
    ({"skill": 2, "onboarded": 1, "screened": 1}, False, Verdict(Next.REFUSED, NOT_QUALIFIED)),
    ({"skill": 5, "onboarded": 0}, False, Verdict(Next.REFUSED, ONBOARDING_FAILED)),
    ({"skill": 5, "onboarded": 1, "onboarded-failed": 1}, False, Verdict(Next.REFUSED, ONBOARDING_FAILED)),
    ({"skill": 5}, False, Verdict(Next.ONBOARDING)),
    ({"skill": 5, "onboarded": 1}, False, Verdict(Next.SCREENING)),
    ({"skill": 5, "onboarded": 1, "screened": 1}, False, Verdict(Next.GOLD)),
    ({"skill": 5, "onboarded": 1, "screened": 1, "g-wrong-golds": 2}, False, Verdict(Next.REFUSED, NOT_QUALIFIED)),
])
def test_mephistos_order_from_one_snapshot(granted: dict[str, int], blocked: bool, expected: Verdict) -> None:
    assert decide(EVERYTHING, granted, blocked=blocked) == expected


def test_a_run_without_rules_reads_no_grants_and_gives_a_unit() -> None:
    plain = GateRules("mock")
    assert not plain.reads_grants
    assert decide(plain, {}) == Verdict(Next.UNIT)
    assert decide(plain, {}, blocked=True) == Verdict(Next.REFUSED, NOT_QUALIFIED)


def test_golds_the_schedule_no_longer_asks_for_give_a_unit() -> None:
    rules = GateRules("mock", golds=golds(needs=False))
    assert rules.reads_grants
    assert decide(rules, {"g-correct-golds": 3}) == Verdict(Next.UNIT)


def test_a_requirement_for_another_provider_is_ignored() -> None:
    rules = GateRules("mock", requirements=(Requirement("skill", Comparator.GREATER_THAN_OR_EQUAL_TO, 3, applicable_providers=("mturk",)),))
    assert decide(rules, {}) == Verdict(Next.UNIT)


@pytest.mark.parametrize(("granted", "standing"), [
    ({}, Standing.NEEDED), ({"q": 1}, Standing.PASSED), ({"q": 0}, Standing.FAILED),
    ({"q": 1, "q-failed": 1}, Standing.FAILED),
])
def test_onboarding_standing(granted: dict[str, int], standing: Standing) -> None:
    assert onboarding_standing(granted, "q") == standing
