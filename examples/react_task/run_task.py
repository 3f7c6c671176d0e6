#!/usr/bin/env python3
"""A React task on mephisto-task, launched the Mephisto way: `mephisto-dist run examples/react_task`
(or `python run_task.py` under a real Mephisto). The webapp is built by build_custom_bundle."""

from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import (
    SharedStaticTaskState,
)
from mephisto.abstractions.blueprints.mixins.screen_task_required import (
    ScreenTaskRequired,
)
from mephisto.data_model.unit import Unit
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import build_custom_bundle, task_script
from omegaconf import DictConfig


def my_screening_unit_generator():
    while True:
        yield {"text": "SCREENING UNIT: press the Bad button", "is_screen": True}


def validate_screening_unit(unit: Unit) -> bool:
    agent = unit.get_assigned_agent()
    if agent is None:
        return False
    outputs = agent.state.get_data()["outputs"]
    return outputs is not None and outputs.get("rating") == "bad"


def handle_onboarding(onboarding_data) -> bool:
    return onboarding_data["outputs"]["success"] is True


@task_script(default_config_file="example.yaml")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedStaticTaskState(
        static_task_data=[
            {"text": "This text is good text!"},
            {"text": "This text is bad text!"},
        ],
        validate_onboarding=handle_onboarding,
    )

    if cfg.mephisto.blueprint["use_screening_task"]:
        shared_state.on_unit_submitted = ScreenTaskRequired.create_validation_function(
            cfg.mephisto, validate_screening_unit
        )
        shared_state.screening_data_factory = my_screening_unit_generator()
        shared_state.qualifications += ScreenTaskRequired.get_mixin_qualifications(
            cfg.mephisto, shared_state
        )

    build_custom_bundle(
        cfg.task_dir,
        force_rebuild=cfg.mephisto.task.force_rebuild,
        post_install_script=cfg.mephisto.task.post_install_script,
    )

    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
