"""A ParlAI world that pairs one worker with a bot the world makes (agent_count 1): the bot echoes each
message back in capitals, for ``num_turns`` turns. No model: the point is the shape, a world whose
partner is an agent of its own, run by the same runner as a chat between workers."""

from parlai.core.agents import Agent
from parlai.core.message import Message
from parlai.core.worlds import validate
from parlai.crowdsourcing.utils.worlds import CrowdTaskWorld


class EchoBot(Agent):
    def __init__(self, opt):
        super().__init__(opt)
        self.id = "Echo Bot"

    def act(self):
        heard = (self.observation or {}).get("text", "")
        return Message({"id": self.id, "text": f"ECHO: {heard.upper()}", "episode_done": False})


class BotChatWorld(CrowdTaskWorld):
    def __init__(self, opt, agents):
        super().__init__(opt, agents[0])
        self.opt = opt  # ParlAI's CrowdTaskWorld does not keep it
        self.human = agents[0]
        self.human.agent_id = "You"
        self.bot = EchoBot(opt)
        self.turns = 0

    def parley(self):
        said = self.human.act(timeout=self.opt["turn_timeout"])
        self.bot.observe(validate(said))
        self.human.observe(validate(self.bot.act()))
        self.turns += 1
        if self.turns >= self.opt["num_turns"]:
            self.episodeDone = True

    def prep_save_data(self, agents):
        return {"bot": self.bot.id, "turns": self.turns}

    def shutdown(self):
        self.human.shutdown()


def make_world(opt, agents):
    return BotChatWorld(opt, agents)


def get_world_params():
    return {"agent_count": 1}
