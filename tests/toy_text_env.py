"""A third-party text env for the trainer's tests: not part of interactcs_gym, registered by the
tests themselves (``register_toy_env``), the way a user would bring their own env.

The user names a word; the agent should say it. Reward 1.0 when it does (the episode ends),
``max_turns`` turns otherwise (truncated, reward 0). Each turn costs 1.0 when the agent's text is
longer than ``long_turn_chars`` characters; ``info["process_reward"]`` is the fraction of the word's
letters that appear in the turn.
"""

from __future__ import annotations

import string

import gymnasium as gym

WORDS = ("apple", "river", "stone", "cloud", "amber", "maple")
TOY_ENV_ID = "ToyKeyword-v0"


class ToyKeywordEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, max_turns: int = 3, long_turn_chars: int = 40, with_messages: bool = True):
        self.observation_space = gym.spaces.Text(max_length=200, charset=string.printable)
        self.action_space = gym.spaces.Text(max_length=10_000, charset=string.printable)
        self.max_turns = max_turns
        self.long_turn_chars = long_turn_chars
        self.with_messages = with_messages
        self.word = ""
        self.turn = 0
        self.messages: list[dict[str, str]] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.word = WORDS[int(self.np_random.integers(len(WORDS)))]
        self.turn = 0
        obs = f"Please say the word {self.word}."
        self.messages = [{"role": "system", "content": "Repeat the word the user asks for."},
                         {"role": "user", "content": obs}]
        return obs, self._info(0.0, None)

    def step(self, action: str):
        self.turn += 1
        said = self.word in action
        cost = 1.0 if len(action) > self.long_turn_chars else 0.0
        process = sum(c in action for c in self.word) / len(self.word)
        terminated = said
        truncated = not said and self.turn >= self.max_turns
        obs = "Thanks!" if said else f"No. Say {self.word}."
        self.messages += [{"role": "assistant", "content": action}, {"role": "user", "content": obs}]
        return obs, float(said), terminated, truncated, self._info(cost, process)

    def _info(self, cost, process):
        info = {"cost": cost, "turn": self.turn}
        if process is not None:
            info["process_reward"] = process
        if self.with_messages:
            info["messages"] = [dict(m) for m in self.messages]
        return info


class ToyAgent:
    """A scripted agent for the toy env (``interactcs_gym.agents.Agent`` interface): first a long
    greeting, then the word the user asked for."""

    def reset(self, *, seed=None):
        self.turn = 0

    def act(self, observation, info):
        self.turn += 1
        if self.turn == 1:
            return "Hello, I am here to help you today."
        return observation.rstrip(".").split()[-1]


def register_toy_env() -> str:
    if TOY_ENV_ID not in gym.registry:
        gym.register(id=TOY_ENV_ID, entry_point=ToyKeywordEnv, disable_env_checker=True)
    return TOY_ENV_ID


# `gym.make("tests.toy_text_env:ToyKeyword-v0")` imports this module, which must register the id
# (how gymnasium loads a third-party package's envs; the trainer's CLI tests use it).
register_toy_env()
