"""The FDS metric family: the paper's Table 1 columns (Sat, FR %, Comm, Logic, V-Rate %) plus the
mean session cost and turns, computed from a recorded episode (a line of the results file).

``FoodDeliveryServiceEnv.metric_family`` declares :data:`FDS_METRICS`; the evaluation CLI, its report
and the CMPO trainer's rollout log (``metrics/*`` keys) all read these definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interactcs_gym.core.metrics import (
    COST,
    STATUS_AGENT_ERROR,
    TURNS,
    Metric,
    MetricFamily,
    all_turns_well_formed,
    final_info,
    float_or_none,
    judged_quality,
)


def voucher_issued(record: Mapping[str, Any]) -> bool:
    """V-Rate's per-session indicator: the env's ``voucher_issued`` on the last step, else whether
    any turn was charged a ``voucher`` cost."""
    flag = final_info(record).get("voucher_issued")
    if flag is not None:
        return bool(flag)
    return any((t.get("costs") or {}).get("voucher", 0.0) > 0 for t in record.get("per_turn") or [])


#: Satisfaction of a session the agent could not finish (it raised or returned a non-``str``):
#: the bottom of the 1-5 scale, as for a user who gives up.
FAILED_SESSION_SATISFACTION = 1.0


def fds_episode_values(record: Mapping[str, Any]) -> dict[str, float | None]:
    """Table 1 values of one FDS session.

    * ``sat``: ``final_info["satisfaction"]`` (1-5); an agent error counts as
      :data:`FAILED_SESSION_SATISFACTION`.
    * ``fr``: 1 if ``final_info["finished_ok"]`` (every turn well formed, at most one voucher) and
      the agent did not fail, else 0.
    * ``comm`` / ``logic``: the quality judge's totals (0-28 / 0-12), ``None`` without a judge.
    * ``v_rate``: 1 if a voucher was issued in the session (:func:`voucher_issued`), else 0.
    * ``cost``: the session cost ``cost_total``; ``turns``: agent turns.
    """
    final = final_info(record)
    failed = record.get("status") == STATUS_AGENT_ERROR
    sat = FAILED_SESSION_SATISFACTION if failed else float_or_none(final.get("satisfaction"))
    finished = final.get("finished_ok")
    fr = 0.0 if failed else (float(bool(finished)) if finished is not None
                             else float(all_turns_well_formed(record)))
    return {
        "sat": sat,
        "fr": fr,
        "comm": judged_quality(record, "comm_total"),
        "logic": judged_quality(record, "logic_total"),
        "v_rate": float(voucher_issued(record)),
        "cost": float_or_none(record.get("cost_total")),
        "turns": float_or_none(record.get("turns")),
    }


FDS_METRICS = MetricFamily(
    name="fds",
    title="FoodDeliveryService (paper Table 1 columns)",
    metrics=(
        Metric("sat", "Sat", digits=2, help="final user satisfaction, 1-5"),
        Metric("fr", "FR (%)", percent=True, digits=1, help="finished sessions: protocol kept, <=1 voucher"),
        Metric("comm", "Comm", digits=2, judged=True, help="communication quality, 0-28"),
        Metric("logic", "Logic", digits=2, judged=True, help="logic quality, 0-12"),
        Metric("v_rate", "V-Rate (%)", percent=True, digits=1, help="sessions with a voucher"),
        COST,
        TURNS,
    ),
    episode_values=fds_episode_values,
    utility="sat",
    cost="v_rate",
    notes=("A session whose agent raised or returned a non-str counts as Sat 1, not finished.",),
)
