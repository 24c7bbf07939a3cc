"""Replay a task's gold actions through a Tau2 env: the installation check of the adapters.

A task's evaluation criteria list its gold actions (the agent's tool calls and, in telecom, the
user's device actions) and the information the agent must communicate. :func:`gold_dialogue`
turns them into the agent's actions and a script for the scripted user; :func:`replay_gold` runs
them, so the episode must end with the official reward 1.0 and the database the official
evaluator expects::

    python -m interactcs_gym.tau2.replay --domain retail --limit 5
"""

from __future__ import annotations

import argparse
from typing import Any

from interactcs_gym.tau2.protocol import STOP_TOKEN, format_tool_call

DONE = "Done."


def gold_dialogue(task: Any) -> tuple[list[str], list[Any]]:
    """``(agent_actions, user_script)`` that carry out ``task``'s gold actions in order.

    The user opens with the task's reason for calling. Agent actions are replayed as tool calls;
    each run of user actions is asked for in one message, which the scripted user answers by
    calling those tools one at a time and then saying "Done.". The agent's last message states
    every piece of information the task requires, and the user ends the conversation.
    """
    from interactcs_gym.tau2.users import opening_line

    criteria = task.evaluation_criteria
    actions = list(criteria.actions or []) if criteria else []
    agent: list[str] = []
    user: list[Any] = [opening_line(task.user_scenario.instructions)]
    i = 0
    while i < len(actions):
        if actions[i].requestor != "user":
            agent.append(format_tool_call(actions[i].name, actions[i].arguments))
            i += 1
            continue
        group = []
        while i < len(actions) and actions[i].requestor == "user":
            group.append(actions[i])
            i += 1
        agent.append("Please do this on your device, in order: "
                     + "; ".join(a.get_func_format() for a in group) + ".")
        user.extend({"name": a.name, "arguments": dict(a.arguments)} for a in group)
        user.append(DONE)
    info = list(criteria.communicate_info or []) if criteria else []
    agent.append("To sum up: " + "; ".join(info) + ". Is there anything else?" if info
                 else "Is there anything else I can help you with?")
    user.append(STOP_TOKEN)
    return agent, user


def replay_gold(env: Any, task: int | str, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Play ``task``'s gold dialogue on ``env`` (a ``Tau2Env`` with the scripted user).

    Returns the last step's reward and info. Raises ``RuntimeError`` if the episode ends early.
    """
    base = getattr(env, "unwrapped", env)
    index = base._task_index(task)
    agent, script = gold_dialogue(base.tasks[index])
    env.reset(seed=seed, options={"task": index, "user_script": script})
    for n, action in enumerate(agent, 1):
        _, reward, terminated, truncated, info = env.step(action)
        if not info["format_ok"]:
            raise RuntimeError(f"gold action {action!r} was refused: {info['format_error']}")
        if terminated or truncated:
            if n != len(agent):
                raise RuntimeError(f"episode ended after {n} of {len(agent)} gold actions: "
                                   f"{info['termination_reason']}")
            return float(reward), info
    raise RuntimeError("the gold dialogue did not end the episode")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="retail", help="retail, airline, telecom, mock")
    parser.add_argument("--split", default="base", help="base, train or test")
    parser.add_argument("--db-path", default=None, help="own domain database (airline)")
    parser.add_argument("--tasks", default=None, help="own task file (JSON)")
    parser.add_argument("--limit", type=int, default=None, help="replay the first N tasks only")
    args = parser.parse_args(argv)

    from interactcs_gym.tau2.env import Tau2Env

    env = Tau2Env(domain=args.domain, split=args.split, tasks=args.tasks, db_path=args.db_path,
                  user_simulator="scripted")
    failures = 0
    for index, task in enumerate(env.tasks[: args.limit]):
        try:
            reward, info = replay_gold(env, index)
            note = info["termination_reason"]
        except (RuntimeError, ValueError) as exc:
            reward, note = 0.0, str(exc)
        failures += reward < 1.0
        print(f"{task.id}\treward={reward:.1f}\t{note}")
    print(f"{failures} task(s) without reward 1.0")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
