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
    started_at, t0 = utc_now(), time.perf_counter()
    agent_s = env_s = 0.0
    status, error, info = STATUS_OK, None, {}
    per_turn: list[dict[str, Any]] = []
    total_reward, final_reward = 0.0, None
    terminated = truncated = False

    try:
        t = time.perf_counter()
        obs, info = env.reset(seed=seed, options=None if options is None else dict(options))
        env_s += time.perf_counter() - t
    except Exception as exc:
        status, error = _failure_status(exc, STATUS_ENV_ERROR), _error(exc, "reset", 0)
    if status == STATUS_OK:
        try:
            _reset_agent(agent, seed if agent_seed is None else agent_seed)
        except Exception as exc:
            status, error = STATUS_AGENT_ERROR, _error(exc, "agent.reset", 0)
    messages = list(info.get("messages") or []) or ([{"role": "user", "content": obs}] if status == STATUS_OK else [])

    steps = 0
    while status == STATUS_OK and (stop_after is None or steps < stop_after):
        t = time.perf_counter()
        try:
            action = agent.act(obs, info)
        except Exception as exc:
            status = _failure_status(exc, STATUS_AGENT_ERROR)
            error = _error(exc, "agent.act", steps + 1)
            break
        finally:
            agent_s += time.perf_counter() - t
        if not isinstance(action, str):
            status = STATUS_AGENT_ERROR
            error = {"phase": "agent.act", "turn": steps + 1, "type": "TypeError",
                     "message": f"act() returned {type(action).__name__} ({action!r:.200}), expected str",
                     "traceback": None}
            break
        t = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except Exception as exc:
            status, error = _failure_status(exc, STATUS_ENV_ERROR), _error(exc, "step", steps + 1)
            break
        finally:
            elapsed = time.perf_counter() - t
            env_s += elapsed
            if step_times is not None:
                step_times.append(elapsed)
        steps += 1
        final_reward = float(reward)
        total_reward += final_reward
        per_turn.append(_turn_entry(info, final_reward))
        # An env without info["messages"]: the dialogue is rebuilt from actions and observations.
        messages = list(info.get("messages") or []) or [*messages, {"role": "assistant", "content": action},
                                                          {"role": "user", "content": obs}]
        if terminated or truncated:
            break
        if steps >= max_steps:
            status = STATUS_ENV_ERROR
            error = {"phase": "step", "turn": steps, "type": "EpisodeTooLong",
                     "message": f"the episode did not end after {max_steps} steps (--max-steps)",
                     "traceback": None}

    return {
        "status": status,
        "error": error,
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "turns": len(per_turn),
        "return": total_reward,
        "final_reward": final_reward,
        "cost_total": float(info.get("cost_total", 0.0) or 0.0),
        "termination_reason": info.get("termination_reason"),
        "final_info": {k: v for k, v in info.items() if k != "messages"},
        "per_turn": per_turn,
        "messages": messages,
        "timing": {"started_at": started_at, "wall_s": time.perf_counter() - t0,
                   "agent_s": agent_s, "env_s": env_s},
    }
