"""A small FDS-shaped env and agents for the evaluation harness tests.

Importing this module registers ``EvalToy-v0`` (takes ``options={"user_index": u}``, emits the FDS
extra info keys ``satisfaction``, ``voucher_issued``, ``finished_ok`` and declares the ``fds`` metric
family through its class attribute) and ``EvalToyPlain-v0`` (rejects options: users are drawn by the
seed; generic metrics). The CLI reaches them as ``eval_toy_env:EvalToy-v0`` with ``tests/`` on the
path.

Dynamics: user u has demand ``DEMANDS[u % 3]``; the starting satisfaction is 2 or 3 (seeded). A
voucher adds 2 (incentive-open), 1 (feedback-oriented) or 0 (rigid); a second voucher is refused
and clears ``finished_ok``. ``<action>bye</action>`` ends the dialogue (terminated), else it is
truncated after ``max_turns``. Reward on the last step: (satisfaction - 1) / 4.
"""

from __future__ import annotations

import re
import time

import gymnasium as gym
import numpy as np

from interactcs_gym import DialogueEnv, Opening, StepOutcome
from interactcs_gym.agents import Agent

DEMANDS = ("incentive-open", "feedback-oriented", "rigid-pursuit")
_ACTION = re.compile(r"<response>(.*?)</response>\s*<action>(chat|voucher|bye)</action>\s*$", re.S)


class EvalToyEnv(DialogueEnv):
    metric_family = "fds"

    def __init__(self, render_mode=None, *, max_turns: int = 4, delay: float = 0.0,
                 accept_user_index: bool = True, num_users: int | None = None) -> None:
        super().__init__(render_mode)
        self.max_turns = max_turns
        self.delay = delay
        self.accept_user_index = accept_user_index
        if num_users is not None:
            self.num_users = num_users

    def _start(self, options):
        if "user_index" in options:
            if not self.accept_user_index:
                raise ValueError("this env takes no user_index option")
            self.user = int(options["user_index"])
        else:
            self.user = int(self.np_random.integers(0, 1000))
        self.demand = DEMANDS[self.user % 3]
        self.sat = float(self.np_random.integers(2, 4))
        self.vouchers = 0
        self.well_formed = True
        return Opening(system_prompt="You are a service agent. Reply as "
                                     "<response>...</response><action>chat|voucher|bye</action>.",
                       observation=f"Hello, I am user {self.user}, my order was late.",
                       task={"user": self.user, "demand": self.demand},
                       extra_info={"voucher_issued": False, "finished_ok": True, "satisfaction": None})

    def _advance(self, action):
        if self.delay:
            time.sleep(self.delay)
        m = _ACTION.search(action)
        costs, error = {}, None
        kind = m.group(2) if m else "chat"
        if not m:
            self.well_formed, error = False, "missing <response>/<action> tags"
        if kind == "voucher":
            if self.vouchers == 0:
                costs = {"voucher": 1.0}
                self.sat += {"incentive-open": 2.0, "feedback-oriented": 1.0}.get(self.demand, 0.0)
            else:
                self.well_formed, error = False, "a second voucher is refused"
            self.vouchers += 1
        terminated = kind == "bye"
        truncated = not terminated and self.turn >= self.max_turns
        done = terminated or truncated
        sat = int(np.clip(round(self.sat), 1, 5))
        extra = {"voucher_issued": self.vouchers > 0, "finished_ok": self.well_formed and self.vouchers <= 1,
                 "satisfaction": sat if done else None, "process_reward": 0.5 if m else 0.0}
        return StepOutcome(observation="Thanks." if done else "Anything else?",
                           reward=(sat - 1) / 4 if done else 0.0, terminated=terminated,
                           truncated=truncated, costs=costs, format_ok=error is None,
                           format_error=error, termination_reason="satisfied" if terminated else
                           ("max_turns" if truncated else None), extra_info=extra)


class EvalToyPlainEnv(EvalToyEnv):
    metric_family = None

    def __init__(self, render_mode=None, **kwargs) -> None:
        super().__init__(render_mode, accept_user_index=False, **kwargs)


def turn(text: str, action: str = "chat") -> str:
    return f"<think>plan</think><response>{text}</response><action>{action}</action>"


class ToyAgent(Agent):
    """Issues a voucher on its first turn with probability ``p_voucher`` (its own seeded RNG), then
    says goodbye."""

    def __init__(self, p_voucher: float = 0.5, api_key: str | None = None) -> None:
        self.p_voucher = p_voucher
        self.api_key = api_key
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed=None):
        self.rng = np.random.default_rng(seed)
        self.turns = 0

    def act(self, observation, info):
        self.turns += 1
        if self.turns == 1:
            give = self.rng.random() < self.p_voucher
            return turn("Sorry about that.", "voucher" if give else "chat")
        return turn("Goodbye.", "bye")


class LeakyAgent(ToyAgent):
    """Writes its API key into the dialogue and then raises an error that quotes it."""

    def act(self, observation, info):
        if info["turn"] == 1:
            raise RuntimeError(f"backend refused key {self.api_key}")
        return turn(f"my key is {self.api_key}")


class FlakyAgent(ToyAgent):
    """Raises for user 1 on its second turn and returns a non-str for user 2."""

    def act(self, observation, info):
        user = info["task"]["user"]
        if user == 1 and info["turn"] == 1:
            raise ValueError("flaky agent failed on purpose")
        if user == 2:
            return 42
        return super().act(observation, info)


class BackendAgent(ToyAgent):
    """Fails while the environment variable ``EVAL_TOY_BACKEND_DOWN`` is set (a back-end outage)."""

    def act(self, observation, info):
        import os

        if os.environ.get("EVAL_TOY_BACKEND_DOWN"):
            raise ConnectionError("back-end unreachable")
        return super().act(observation, info)


class ChatServerAgent(ToyAgent):
    """An LLM agent whose chat server is down while ``EVAL_TOY_BACKEND_DOWN`` is set: the back-end's
    typed error arrives wrapped, as a library would re-raise it."""

    def act(self, observation, info):
        import os

        from interactcs_gym.llm.base import ChatBackendError

        if os.environ.get("EVAL_TOY_BACKEND_DOWN"):
            try:
                raise ChatBackendError("connection refused after 4 attempts")
            except ChatBackendError as exc:
                raise RuntimeError("agent could not get a reply") from exc
        return super().act(observation, info)


class BrokenJudge:
    """A quality judge whose back-end always fails."""

    heuristic = False

    def score_dialogue(self, messages, scenario=None):
        raise TimeoutError("judge back-end timed out")


class SlowAgent(Agent):
    """Another agent (``inner``: a short name or module:Class), slowed down by ``delay`` seconds per
    turn, so that a test can kill a run half-way; its turns are exactly the inner agent's."""

    def __init__(self, inner: str = "sop", delay: float = 0.02, **inner_kwargs) -> None:
        from interactcs_gym.agents import load_agent

        self.inner = load_agent(inner, **inner_kwargs)
        self.delay = delay

    def reset(self, *, seed=None):
        self.inner.reset(seed=seed)

    def act(self, observation, info):
        time.sleep(self.delay)
        return self.inner.act(observation, info)


class HeuristicLengthJudge:
    """A DialogueQualityJudge stand-in scoring by reply count (heuristic, deterministic)."""

    heuristic = True
    name = "length-heuristic"

    def score_dialogue(self, messages, scenario=None):
        from interactcs_gym.judges.base import QualityScore

        n = sum(m["role"] == "assistant" for m in messages)
        comm = {f"c{i}": float(min(4, n + i % 2)) for i in range(7)}
        logic = {f"l{i}": float(min(4, n)) for i in range(3)}
        return QualityScore(communication=comm, logic=logic, heuristic=True)


for _id, _entry in (("EvalToy-v0", "eval_toy_env:EvalToyEnv"),
                    ("EvalToyPlain-v0", "eval_toy_env:EvalToyPlainEnv")):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry)
