"""One agent in one env: the one episode loop of the project.

:func:`play_episode` resets the env and the agent, lets the agent act until the episode ends, and
returns the episode as the evaluation stores it: ``status`` and ``error``, ``terminated`` /
``truncated``, ``turns``, ``return`` (sum of rewards), ``final_reward``, ``cost_total``,
``termination_reason``, ``final_info`` (the last info without ``messages``), ``per_turn`` (one
entry per step: turn, reward, cost, costs, format_ok, format_error, process_reward when a judge is
attached), ``messages`` (the dialogue in chat format) and ``timing``.

The evaluation CLI (:func:`interactcs_gym.evaluation.runner.run_episode`), CMPO's SFT
demonstrations and the tiny model's opening turns (``cmpo.sft``, ``cmpo.tiny_model``) and the
benchmarks play their episodes with it.

Statuses: ``ok``; ``agent_error`` when the agent raised or returned a non-``str`` (the dialogue so
far is kept, the error and a traceback summary are recorded); ``env_error`` when the env raised or
did not end within ``max_steps`` steps; ``backend_error`` when what raised was a chat back-end
failing after its retries (:class:`~interactcs_gym.llm.base.ChatBackendError`, e.g. the agent's or
the user simulator's server is down).
"""

from __future__ import annotations

import inspect
import time
import traceback
from typing import Any, Mapping

from interactcs_gym.core.metrics import STATUS_AGENT_ERROR, STATUS_BACKEND_ERROR, STATUS_ENV_ERROR, STATUS_OK
from interactcs_gym.evaluation.store import utc_now
from interactcs_gym.llm.base import ChatBackendError

#: Safety bound on env steps per episode, for envs that never end on their own (``--max-steps``).
DEFAULT_MAX_STEPS = 1000
_TRACEBACK_CHARS = 4000


def _error(exc: BaseException, phase: str, turn: int) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > _TRACEBACK_CHARS:
        tb = "...\n" + tb[-_TRACEBACK_CHARS:]
    return {"phase": phase, "turn": turn, "type": type(exc).__name__, "message": str(exc)[:1000],
            "traceback": tb}


def _failure_status(exc: BaseException, status: str) -> str:
    """``backend_error`` when a :class:`ChatBackendError` caused ``exc`` (a server that died or timed
    out after its retries: not the agent's or the env's fault), else ``status``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ChatBackendError):
            return STATUS_BACKEND_ERROR
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return status


def _reset_agent(agent: Any, seed: int) -> None:
    reset = getattr(agent, "reset", None)
    if reset is None:
        return
    params = inspect.signature(reset).parameters
    if "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        reset(seed=seed)
    else:
        reset()


def _turn_entry(info: Mapping[str, Any], reward: float) -> dict[str, Any]:
    entry = {"turn": info.get("turn"), "reward": reward, "cost": info.get("cost"),
             "costs": info.get("costs"), "format_ok": info.get("format_ok"),
             "format_error": info.get("format_error")}
    if "process_reward" in info:
        entry["process_reward"] = info["process_reward"]
    return entry


class EpisodePlay:
    """One episode's state, stepped from outside: what :func:`play_episode` and the batched
    evaluation (:func:`play_episodes_batched`) share. ``begin`` resets the env, ``step(action)``
    checks the action and steps the env, ``fail`` records an error of the agent, ``record`` returns
    the episode record; ``done`` says whether the episode is over (ended or failed)."""

    def __init__(self, env: Any, *, seed: int | None, options: Mapping[str, Any] | None = None,
                 max_steps: int = DEFAULT_MAX_STEPS, step_times: list[float] | None = None) -> None:
        self.env, self.seed, self.options = env, seed, options
        self.max_steps, self.step_times = max_steps, step_times
        self.started_at, self.t0 = utc_now(), time.perf_counter()
        self.agent_s = self.env_s = 0.0
        self.status, self.error, self.info = STATUS_OK, None, {}
        self.obs: Any = None
        self.per_turn: list[dict[str, Any]] = []
        self.total_reward, self.final_reward = 0.0, None
        self.terminated = self.truncated = False
        self.messages: list[dict[str, Any]] = []
        self.steps = 0

    @property
    def done(self) -> bool:
        return self.status != STATUS_OK or self.terminated or self.truncated

    def begin(self, agent: Any = None, agent_seed: int | None = None) -> None:
        """``env.reset(seed, options)``, then ``agent.reset(seed=agent_seed)`` when ``agent`` is given."""
        try:
            t = time.perf_counter()
            self.obs, self.info = self.env.reset(seed=self.seed,
                                                 options=None if self.options is None else dict(self.options))
            self.env_s += time.perf_counter() - t
        except Exception as exc:
            self.status, self.error = _failure_status(exc, STATUS_ENV_ERROR), _error(exc, "reset", 0)
        if self.status == STATUS_OK and agent is not None:
            try:
                _reset_agent(agent, self.seed if agent_seed is None else agent_seed)
            except Exception as exc:
                self.status, self.error = STATUS_AGENT_ERROR, _error(exc, "agent.reset", 0)
        self.messages = (list(self.info.get("messages") or [])
                         or ([{"role": "user", "content": self.obs}] if self.status == STATUS_OK else []))

    def fail(self, exc: BaseException, phase: str = "agent.act") -> None:
        """The agent raised while choosing the next turn: the episode ends as an agent error."""
        self.status = _failure_status(exc, STATUS_AGENT_ERROR)
        self.error = _error(exc, phase, self.steps + 1)

    def step(self, action: Any) -> None:
        """Play the agent's ``action`` (a non-``str`` is an agent error) and record the step."""
        if not isinstance(action, str):
            self.status = STATUS_AGENT_ERROR
            self.error = {"phase": "agent.act", "turn": self.steps + 1, "type": "TypeError",
                          "message": f"act() returned {type(action).__name__} ({action!r:.200}), expected str",
                          "traceback": None}
            return
        t = time.perf_counter()
        try:
            obs, reward, self.terminated, self.truncated, info = self.env.step(action)
        except Exception as exc:
            self.status = _failure_status(exc, STATUS_ENV_ERROR)
            self.error = _error(exc, "step", self.steps + 1)
            return
        finally:
            elapsed = time.perf_counter() - t
            self.env_s += elapsed
            if self.step_times is not None:
                self.step_times.append(elapsed)
        self.obs, self.info = obs, info
        self.steps += 1
        self.final_reward = float(reward)
        self.total_reward += self.final_reward
        self.per_turn.append(_turn_entry(info, self.final_reward))
        # An env without info["messages"]: the dialogue is rebuilt from actions and observations.
        self.messages = list(info.get("messages") or []) or [
            *self.messages, {"role": "assistant", "content": action}, {"role": "user", "content": obs}]
        if not (self.terminated or self.truncated) and self.steps >= self.max_steps:
            self.status = STATUS_ENV_ERROR
            self.error = {"phase": "step", "turn": self.steps, "type": "EpisodeTooLong",
                          "message": f"the episode did not end after {self.max_steps} steps (--max-steps)",
                          "traceback": None}

    def record(self) -> dict[str, Any]:
        """The episode record described in the module docstring."""
        info = self.info
        return {
            "status": self.status,
            "error": self.error,
            "terminated": bool(self.terminated),
            "truncated": bool(self.truncated),
            "turns": len(self.per_turn),
            "return": self.total_reward,
            "final_reward": self.final_reward,
            "cost_total": float(info.get("cost_total", 0.0) or 0.0),
            "termination_reason": info.get("termination_reason"),
            "final_info": {k: v for k, v in info.items() if k != "messages"},
            "per_turn": self.per_turn,
            "messages": self.messages,
            "timing": {"started_at": self.started_at, "wall_s": time.perf_counter() - self.t0,
                       "agent_s": self.agent_s, "env_s": self.env_s},
        }


def play_episode(env: Any, agent: Any, *, seed: int | None, options: Mapping[str, Any] | None = None,
                 agent_seed: int | None = None, max_steps: int = DEFAULT_MAX_STEPS,
                 stop_after: int | None = None,
                 step_times: list[float] | None = None) -> dict[str, Any]:
    """Play one episode: ``env.reset(seed=seed, options=options)``, ``agent.reset(seed=agent_seed)``
    (``seed`` when ``None``), then ``agent.act`` / ``env.step`` until the episode ends.

    ``stop_after``: leave after that many agent turns without ending the episode (for callers that
    need only its beginning). ``step_times``: when a list, each ``env.step``'s wall time is appended.
    Returns the episode record described in the module docstring.
    """
    play = EpisodePlay(env, seed=seed, options=options, max_steps=max_steps, step_times=step_times)
    play.begin(agent, agent_seed)
    while not play.done and (stop_after is None or play.steps < stop_after):
        t = time.perf_counter()
        try:
            action = agent.act(play.obs, play.info)
        except Exception as exc:
            play.fail(exc)
            break
        finally:
            play.agent_s += time.perf_counter() - t
        play.step(action)
    return play.record()


def can_act_batch(agent: Any) -> bool:
    """Whether ``agent`` has ``act_batch(observations, infos, *, seeds)`` (the seeds keyword is what
    keeps each episode's agent seed on the batched path; see :class:`~interactcs_gym.core.agent.Agent`)."""
    act_batch = getattr(agent, "act_batch", None)
    if not callable(act_batch):
        return False
    try:
        params = inspect.signature(act_batch).parameters
    except (TypeError, ValueError):
        return False
    return "seeds" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def act_batch_step(agent: Any, plays: list[EpisodePlay], seeds: list[int]) -> None:
    """One lockstep turn of the episodes ``plays`` (none done): one ``agent.act_batch`` call for all
    of them, then each env steps on its row's action. ``act_batch`` raising, or returning other than
    a list of ``len(plays)`` items, is an agent error of every episode of the call; an env raising
    ends only its own episode. ``seeds``: the episodes' agent seeds (``act_batch(..., seeds=)``)."""
    t = time.perf_counter()
    try:
        actions = agent.act_batch([p.obs for p in plays], [p.info for p in plays], seeds=list(seeds))
        if not isinstance(actions, (list, tuple)) or len(actions) != len(plays):
            raise TypeError(f"act_batch() returned {type(actions).__name__} "
                            f"({actions!r:.200}), expected a list of {len(plays)} str")
    except Exception as exc:
        elapsed = time.perf_counter() - t
        for play in plays:
            play.agent_s += elapsed
            play.fail(exc, "agent.act_batch")
        return
    elapsed = time.perf_counter() - t
    for play, action in zip(plays, actions):
        play.agent_s += elapsed
        play.step(action)
