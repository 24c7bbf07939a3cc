"""The paper's τ²-bench metrics (Table 2), mapped from the official reward breakdown.

Per episode, from the official ``RewardInfo`` of its last step (``info["reward_info"]``):

* ``pass``: 1.0 when the official reward is 1.0 (it is a product of 0/1 checks over the task's
  reward basis: DB and COMMUNICATE for retail and airline, ENV_ASSERTION and sometimes ACTION for
  telecom). The mean over episodes is **Pass@1**.
* ``communicate``: 1.0 when every ``communicate_checks`` item was met (each required piece of
  information appears in an agent message), or the task requires none. Mean: **Comm. rate**.
* ``db``: ``db_check.db_reward``: 1.0 when the final agent and user databases hash equal to the
  gold ones (the official replay of the task's gold actions). Mean: **DB rate**.
* ``action_reward``: the fraction of the task's gold actions found among the episode's tool calls
  (``action_checks``; 1.0 for a task without gold actions); ``actions_matched`` /
  ``actions_total`` are the counts. The paper's Table 2 "Action Reward" column is the *total*
  number of matched gold actions over the benchmark; the evaluation CLI's τ² family
  (:mod:`interactcs_gym.tau2.metric_family`) reports both that total and the mean fraction.

An episode the official evaluator scores as premature (step limit reached, simulated user failed,
evaluation failed) gets 0 on every part.
"""

from __future__ import annotations

from typing import Any


def episode_metrics(reward_info: dict[str, Any], n_gold_actions: int,
                    premature: bool = False) -> dict[str, float]:
    """The paper's per-episode parts from an official ``RewardInfo`` (as a JSON dict)."""
    if premature:
        return {"pass": 0.0, "communicate": 0.0, "db": 0.0, "action_reward": 0.0,
                "actions_matched": 0, "actions_total": int(n_gold_actions)}
    reward = float(reward_info.get("reward", 0.0))
    communicate = reward_info.get("communicate_checks") or []
    db_check = reward_info.get("db_check")
    actions = reward_info.get("action_checks")
    if actions is None:  # no gold actions to check (the evaluator then leaves the list out)
        matched, total = int(n_gold_actions), int(n_gold_actions)
    else:
        matched, total = sum(bool(a["action_match"]) for a in actions), len(actions)
    return {
        "pass": 1.0 if reward >= 1.0 - 1e-9 else 0.0,
        "communicate": 1.0 if all(c["met"] for c in communicate) else 0.0,
        "db": float(db_check["db_reward"]) if db_check is not None else 1.0,
        "action_reward": matched / total if total else 1.0,
        "actions_matched": matched,
        "actions_total": total,
    }
