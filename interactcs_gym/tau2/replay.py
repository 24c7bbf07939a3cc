"""Replay a task's gold actions through a Tau2 env: the installation check of the adapters.

A task's evaluation criteria list its gold actions (the agent's tool calls and, in telecom, the
user's device actions) and the information the agent must communicate. :func:`gold_dialogue`
turns them into the agent's actions and a script for the scripted user; :func:`replay_gold` runs
them, so the episode must end with the official reward 1.0 and the database the official
evaluator expects. :class:`GoldAgent` is the same agent side as a reference agent for the
evaluation CLI. The command replays every task of the three domains and prints, per domain, the
tasks that reached reward 1.0 and the time it took::

    python -m interactcs_gym.tau2.replay                          # retail, airline, telecom
    python -m interactcs_gym.tau2.replay --domain retail --limit 5 --verbose
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from interactcs_gym.core.agent import Agent
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


class GoldAgent(Agent):
    """Reference agent of the Tau2 envs: says the agent side of the task's :func:`gold_dialogue`.

    It reads the task from ``info["task"]`` (domain and task id) and the task set from the
    package (or ``tasks``, as given to the env). With the scripted user and no script, which opens
    with the task's reason for calling and ends the conversation at its next turn, it earns the
    official reward 1.0 on every retail and airline task: all its turns before the last are tool
    calls. Tasks whose gold actions include the user's own device actions (most of telecom) need
    the user's side of the gold dialogue too (:func:`replay_gold`).

        python -m interactcs_gym.evaluate --env Tau2-Airline-v0 --agent \\
            interactcs_gym.tau2.replay:GoldAgent --env-kwargs '{"user_simulator": "scripted"}'
    """

    name = "gold"

    def __init__(self, tasks: Any = None) -> None:
        self._own_tasks = tasks
        self._tasks: dict[tuple[str, str], Any] = {}
        self._turns: list[str] | None = None

    def reset(self, *, seed: int | None = None) -> None:
        self._turns = None

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if self._turns is None:
            self._turns = gold_dialogue(self._task(info["task"]))[0][::-1]
        return self._turns.pop() if self._turns else STOP_TOKEN

    def _task(self, where: dict[str, Any]) -> Any:
        from interactcs_gym.tau2.official import load_tasks

        domain, task_id = where["domain"], where["task_id"]
        if not any(d == domain for d, _ in self._tasks):
            self._tasks.update(((domain, t.id), t) for t in load_tasks(domain, self._own_tasks))
        if (domain, task_id) not in self._tasks:
            raise ValueError(f"task {task_id!r} is not in the τ² {domain} task set of GoldAgent")
        return self._tasks[domain, task_id]


def replay_domain(domain: str, *, split: str = "base", tasks: Any = None,
                  db_path: str | None = None, limit: int | None = None,
                  log: Any = None) -> dict[str, Any]:
    """Replay the gold dialogue of every task of ``split`` (the first ``limit``).

    Returns ``tasks`` (replayed), ``failed`` (ids of the tasks without reward 1.0), ``db_match``
    (tasks whose official DB check matched) and ``seconds`` (building the env included).
    ``log(task_id, reward, note)`` is called after each task.
    """
    from interactcs_gym.tau2.env import Tau2Env

    start = time.perf_counter()
    env = Tau2Env(domain=domain, split=split, tasks=tasks, db_path=db_path,
                  user_simulator="scripted")
    failed, db_match = [], 0
    for task in env.tasks[:limit]:
        try:
            reward, info = replay_gold(env, task.id)
            note = info["termination_reason"]
            db_match += bool((info["reward_info"].get("db_check") or {}).get("db_match"))
        except (RuntimeError, ValueError) as exc:
            reward, note = 0.0, str(exc)
        if reward < 1.0:
            failed.append(task.id)
        if log is not None:
            log(task.id, reward, note)
    return {"tasks": len(env.tasks[:limit]), "failed": failed, "db_match": db_match,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", nargs="+", default=["retail", "airline", "telecom"],
                        help="retail, airline, telecom, mock (default: the first three)")
    parser.add_argument("--split", default="base", help="base, train or test")
    parser.add_argument("--db-path", default=None, help="own domain database (one domain)")
    parser.add_argument("--tasks", default=None, help="own task file, JSON (one domain)")
    parser.add_argument("--limit", type=int, default=None, help="replay the first N tasks only")
    parser.add_argument("--verbose", action="store_true", help="one line per task")
    args = parser.parse_args(argv)
    if (args.db_path or args.tasks) and len(args.domain) != 1:
        parser.error("--db-path and --tasks need exactly one --domain")

    def log(task_id: str, reward: float, note: str) -> None:
        if args.verbose or reward < 1.0:
            print(f"{task_id}\treward={reward:.1f}\t{note}", flush=True)

    from interactcs_gym.tau2.official import require_tau2

    require_tau2()  # the one-time import of τ²-bench (several seconds), outside the timings
    rows, failures = [], 0
    for domain in args.domain:
        r = replay_domain(domain, split=args.split, tasks=args.tasks, db_path=args.db_path,
                          limit=args.limit, log=log)
        failures += len(r["failed"])
        n = r["tasks"]
        rows.append(f"| {domain} | {args.split} | {n - len(r['failed'])}/{n} | "
                    f"{r['db_match']}/{n} | {r['seconds']:.1f} |")
    print("| domain | split | tasks at reward 1.0 | official DB match | time (s) |\n"
          "|---|---|---|---|---|")
    print("\n".join(rows))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
