"""The τ² metric family of the evaluation CLI: the paper's Table 2 columns for the Tau2 ids.

``Tau2Env.metric_family`` names :data:`TAU2_METRICS`, so ``python -m interactcs_gym.evaluate
--env Tau2-Retail-v0 ...`` and its ``report`` show Pass@1, Comm. rate, DB rate, action reward and
the matched gold actions (summed over the tasks, as the paper's column), plus the session cost in
dollars and the turns. Per-episode values come from the last step's ``info["tau2_metrics"]``
(:mod:`interactcs_gym.tau2.metrics` documents the mapping from the official reward breakdown);
an episode whose agent failed (raised, or returned a non-``str``) scores 0 on every part.
"""

from __future__ import annotations

from typing import Any, Mapping

from interactcs_gym.evaluation.metrics import STATUS_AGENT_ERROR, Metric, MetricFamily


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
