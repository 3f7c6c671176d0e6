"""``mephisto.provider.prolific_eligibility_requirements`` becomes a study's eligibility requirements exactly
as Mephisto's requirement classes make them (``eligibility_requirement_classes``, ``to_prolific_dict``): the
class under ``web.eligibility.models``, the attributes it takes in its order with an empty one left out,
Prolific's age question on the age range, a participant group as ``{"id", "value": true}``. Where Mephisto
skips an unknown class or fails on a missing attribute, ours is a config error."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mephisto_dist.errors import ConfigError
from mephisto_dist.providers.prolific.study import eligibility_requirements, keeping_out, study_body

MODELS = "web.eligibility.models."
AGE_QUESTION_ID = "54ac6ea9fdf99b2204feb893"  # Mephisto's ELIGIBILITY_REQUIREMENT_AGE_RANGE_QUESTION_ID
CONFIGURED = [
    {"name": "AgeRangeEligibilityRequirement", "min_age": 18, "max_age": 65},
    {"name": "ApprovalNumbersEligibilityRequirement", "minimum_approvals": 10, "maximum_approvals": 0},
    {"name": "ApprovalRateEligibilityRequirement", "minimum_approval_rate": 95, "maximum_approval_rate": 100},
    {"name": "CustomBlacklistEligibilityRequirement", "black_list": ["PNO"]},
    {"name": "CustomWhitelistEligibilityRequirement", "white_list": ["PYES", "PNO"]},
    {"name": "JoinedBeforeEligibilityRequirement", "joined_before": "2024-01-01"},
]
EXPECTED = [
    {"_cls": MODELS + "AgeRangeEligibilityRequirement", "query": {"id": AGE_QUESTION_ID},
     "attributes": [{"name": "min_age", "value": 18}, {"name": "max_age", "value": 65}]},
    {"_cls": MODELS + "ApprovalNumbersEligibilityRequirement",
     "attributes": [{"name": "minimum_approvals", "value": 10}]},  # 0: left out, as Mephisto does
    {"_cls": MODELS + "ApprovalRateEligibilityRequirement",
     "attributes": [{"name": "minimum_approval_rate", "value": 95}, {"name": "maximum_approval_rate", "value": 100}]},
    {"_cls": MODELS + "CustomBlacklistEligibilityRequirement", "attributes": [{"name": "black_list", "value": ["PNO"]}]},
    {"_cls": MODELS + "CustomWhitelistEligibilityRequirement",
     "attributes": [{"name": "white_list", "value": ["PYES", "PNO"]}]},
    {"_cls": MODELS + "JoinedBeforeEligibilityRequirement",
     "attributes": [{"name": "joined_before", "value": "2024-01-01"}]},
]


def test_each_class_in_prolifics_shape_as_mephisto_makes_it() -> None:
    assert eligibility_requirements(CONFIGURED) == EXPECTED
    assert eligibility_requirements(None) == [] == eligibility_requirements([])


def test_a_participant_group_is_its_id_and_true() -> None:
    assert eligibility_requirements([{"name": "ParticipantGroupEligibilityRequirement", "id": "G1"}]) == [
        {"_cls": MODELS + "ParticipantGroupEligibilityRequirement", "attributes": [{"id": "G1", "value": True}]}]


def test_values_from_a_yaml_config_are_plain_json() -> None:
    configured = OmegaConf.create({"reqs": [{"name": "CustomBlacklistEligibilityRequirement",
                                             "black_list": ["P1", "P2"]}]})["reqs"]
    [made] = eligibility_requirements(configured)
    assert made["attributes"] == [{"name": "black_list", "value": ["P1", "P2"]}]
    assert type(made["attributes"][0]["value"]) is list


def test_an_unknown_class_or_a_missing_attribute_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is not one of"):  # Mephisto skips it: the study open to everyone
        eligibility_requirements([{"name": "AgeRangeEligibility", "min_age": 18}])
    with pytest.raises(ConfigError, match="needs max_age"):  # Mephisto's class fails on it
        eligibility_requirements([{"name": "AgeRangeEligibilityRequirement", "min_age": 18}])
    assert eligibility_requirements([{"name": "ApprovalNumbersEligibilityRequirement"}]) == [
        {"_cls": MODELS + "ApprovalNumbersEligibilityRequirement", "attributes": []}]  # both optional


def test_the_study_body_carries_them() -> None:
    body = study_body({"task_title": "T", "task_reward": 0.3}, {"prolific_eligibility_requirements": CONFIGURED},
                      deployment="d", run_id=1, project_id="P", url="https://x.example/", code="MDC")
    assert body["eligibility_requirements"] == EXPECTED


def test_blocked_participants_are_kept_out_as_mephisto_keeps_them() -> None:
    """Mephisto's provider, making a study while it has blocked workers: the allow list loses them, the
    block list (the configured one, moved last, or a new one) gains them."""
    configured = [{"name": "CustomBlacklistEligibilityRequirement", "black_list": ["POLD"]},
                  {"name": "CustomWhitelistEligibilityRequirement", "white_list": ["PYES", "PBAD"]},
                  {"name": "AgeRangeEligibilityRequirement", "min_age": 18, "max_age": 65}]
    assert keeping_out(configured, []) == configured
    assert keeping_out(configured, ["PBAD"]) == [
        {"name": "CustomWhitelistEligibilityRequirement", "white_list": ["PYES"]},
        {"name": "AgeRangeEligibilityRequirement", "min_age": 18, "max_age": 65},
        {"name": "CustomBlacklistEligibilityRequirement", "black_list": ["PBAD", "POLD"]}]
    assert keeping_out(None, ["PBAD"]) == [{"name": "CustomBlacklistEligibilityRequirement", "black_list": ["PBAD"]}]
    body = study_body({"task_title": "T"}, {}, deployment="d", run_id=1, project_id="P", url="u", code="c",
                      blocked=["PBAD"])
    assert body["eligibility_requirements"] == [
        {"_cls": MODELS + "CustomBlacklistEligibilityRequirement", "attributes": [{"name": "black_list", "value": ["PBAD"]}]}]
