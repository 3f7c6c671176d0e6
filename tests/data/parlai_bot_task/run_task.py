"""A worker chats with a bot the world makes (parlai_chat, agent_count 1)."""

from mephisto.abstractions.blueprints.parlai_chat.parlai_chat_blueprint import SharedParlAITaskState
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import task_script
from omegaconf import DictConfig


@task_script(default_config_file="example.yaml")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedParlAITaskState(world_opt={"num_turns": cfg.num_turns, "turn_timeout": 120})
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
