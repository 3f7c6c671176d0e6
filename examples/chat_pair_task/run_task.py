"""Two workers chat through a TaskRunner, the Mephisto way: the script registers a blueprint whose
TaskRunnerClass relays messages between the two agents of an assignment for ``num_turns`` turns.

The blueprint subclasses the remote procedure one and keeps its BLUEPRINT_TYPE, so the config's
`/mephisto/blueprint: remote_procedure` selects it (Mephisto's registry, too, keeps the last class
registered for a type). Its page is ``chat.js``, hand-written JavaScript (no build step) that speaks
mephisto-task's live protocol: the partner's messages, a box to write in, and a submit button once the
runner says ``task_done``.

    mephisto-dist run examples/chat_pair_task

then open the printed URL twice, with two different ``worker_id``s.
"""

import logging
from typing import Any

from mephisto.abstractions._subcomponents.task_runner import TaskRunner
from mephisto.abstractions.blueprints.remote_procedure.remote_procedure_blueprint import (
    RemoteProcedureBlueprint,
    SharedRemoteProcedureTaskState,
)
from mephisto.operations.operator import Operator
from mephisto.operations.registry import register_mephisto_abstraction
from mephisto.tools.scripts import task_script
from omegaconf import DictConfig


class ChatPairRunner(TaskRunner):
    is_concurrent = True

    def get_init_data_for_agent(self, agent: Any) -> dict[str, Any]:
        return {"task_data": agent.get_unit().get_assignment_data().shared.get("task_data", {}),
                "num_turns": self.shared_state.task_config.get("num_turns", 2)}

    def run_assignment(self, assignment: Any, agents: list[Any]) -> None:
        turns = int(self.shared_state.task_config.get("num_turns", 2))
        timeout = float(self.shared_state.task_config.get("turn_timeout", 300))
        for index, agent in enumerate(agents):
            agent.observe({"text": f"You are speaker {index}.", "task_data": {"speaker": index}})
        for turn in range(turns):
            for index, agent in enumerate(agents):
                act = agent.act(timeout=timeout)
                for other in agents:
                    if other is not agent:
                        other.observe({"text": act.get("text", ""), "speaker": index, "turn": turn})
        for agent in agents:
            agent.observe({"task_data": {"task_done": True}})

    def cleanup_assignment(self, assignment: Any) -> None:
        logging.getLogger(__name__).warning("cleanup_assignment(%s)", assignment.db_id)


@register_mephisto_abstraction()
class ChatPairBlueprint(RemoteProcedureBlueprint):
    TaskRunnerClass = ChatPairRunner


@task_script(default_config_file="example.yaml")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedRemoteProcedureTaskState(
        static_task_data=[{"topic": t} for t in cfg.topics],
        task_config={"num_turns": cfg.num_turns, "turn_timeout": cfg.turn_timeout},
    )
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
