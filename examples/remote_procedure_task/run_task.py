#!/usr/bin/env python3
"""A remote procedure task launched the Mephisto way: `mephisto-dist run examples/remote_procedure_task`
(or `python run_task.py` under a real Mephisto). The webapp is built by build_custom_bundle; the function
the page calls is a closure inside main, run on the Celery workers."""

import time
from typing import Any

from mephisto.abstractions.blueprints.remote_procedure.remote_procedure_blueprint import (
    RemoteProcedureAgentState,
    SharedRemoteProcedureTaskState,
)
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import build_custom_bundle, task_script
from omegaconf import DictConfig

POSITIVE = {"good", "great", "nice", "love", "happy", "excellent", "fine", "wonderful"}
NEGATIVE = {"bad", "awful", "terrible", "hate", "sad", "poor", "horrible", "wrong"}


@task_script(default_config_file="example.yaml")
def main(operator: Operator, cfg: DictConfig) -> None:
    prompts = [
        {"id": "1", "prompt": "Write a sentence a restaurant critic might say.",
         "text": "The soup was good but the bread was awful."},
        {"id": "2", "prompt": "Write a sentence about the weather.", "text": "What a wonderful sunny day."},
    ]

    def classify(_request_id: str, args: dict[str, Any], agent_state: RemoteProcedureAgentState) -> dict[str, Any]:
        """A stand-in for a model: slow on purpose, and it reads the task's row from the agent state."""
        time.sleep(1.0)
        words = [w.strip(".,!?;:").lower() for w in str(args.get("text", "")).split()]
        score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
        label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        return {"label": label, "score": score, "prompt_id": agent_state.init_data["id"]}

    shared_state = SharedRemoteProcedureTaskState(
        static_task_data=prompts,
        function_registry={"classify": classify},
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
