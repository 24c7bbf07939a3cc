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
  (:data:`TAU2_METRICS`) reports both that total and the mean fraction.

An episode the official evaluator scores as premature (step limit reached, simulated user failed,
evaluation failed) gets 0 on every part.

:data:`TAU2_METRICS` is the evaluation CLI's metric family for the Tau2 ids
(``Tau2Env.metric_family`` names it): ``python -m interactcs_gym.evaluate --env Tau2-Retail-v0``
and its ``report`` show Pass@1, Comm. rate, DB rate, action reward, the matched gold actions
(summed over the tasks, as the paper's column), the session cost in dollars and the turns. An
episode whose agent failed (raised, or returned a non-``str``) scores 0 on every part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interactcs_gym.core.metrics import STATUS_AGENT_ERROR, Metric, MetricFamily


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


# ---------------------------------------------------------------------------- CLI family
def tau2_episode_values(record: Mapping[str, Any]) -> dict[str, float | None]:
    """One recorded episode's values (a line of the results file)."""
    parts = (record.get("final_info") or {}).get("tau2_metrics")
    failed = record.get("status") == STATUS_AGENT_ERROR or parts is None
    if failed:
        parts = {"pass": 0.0, "communicate": 0.0, "db": 0.0, "action_reward": 0.0,
                 "actions_matched": 0}
    return {
        "pass": float(parts["pass"]),
        "comm": float(parts["communicate"]),
        "db": float(parts["db"]),
        "action_reward": float(parts["action_reward"]),
        "actions_matched": float(parts["actions_matched"]),
        "cost": _number(record.get("cost_total")),
        "turns": _number(record.get("turns")),
    }


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


TAU2_METRICS = MetricFamily(
    name="tau2",
    title="τ²-bench (paper Table 2 columns)",
    metrics=(
        Metric("pass", "Pass@1 (%)", percent=True, digits=1,
               help="episodes with the official reward 1.0"),
        Metric("comm", "Comm. rate (%)", percent=True, digits=1,
               help="episodes where every required piece of information was said"),
        Metric("db", "DB rate (%)", percent=True, digits=1,
               help="episodes whose final databases equal the gold run's"),
        Metric("action_reward", "Action reward", digits=3,
               help="mean fraction of the task's gold actions among the tool calls"),
        Metric("actions_matched", "Actions matched", digits=1, reduce="sum",
               help="gold actions matched, summed over the tasks (the paper's Action Reward)"),
        Metric("cost", "Cost ($)", digits=2,
               help="mean money granted per session (certificates, refunds; cost_weights apply)"),
        Metric("turns", "Turns", digits=1, help="mean agent turns per session"),
    ),
    episode_values=tau2_episode_values,
    utility="pass",
    cost="cost",
    notes=("Telecom is scored by env assertions; its DB rate is low even for perfect runs "
           "(τ²-bench v0.2.0 compares with an unsynced gold device state).",
           "An episode whose agent failed counts as 0 on every τ² part."),
)
