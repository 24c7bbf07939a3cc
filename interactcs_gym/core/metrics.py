"""Metric families: which numbers a results file reports for an env, and how they are aggregated.

A *metric family* turns one recorded episode (a line of the results file, see
:mod:`interactcs_gym.evaluation.store`) into per-episode values, one per :class:`Metric`; the
aggregation across episodes is the same for every family (:func:`mean_std_over_seeds`).

This module holds what every domain shares: :class:`Metric`, :class:`MetricFamily`, the episode
statuses, the per-episode helpers and :data:`GENERIC_METRICS` (any env of the contract: return,
FR % (every turn well formed), session cost, turns). Each domain defines its own family next to
its env (``interactcs_gym.fds.metrics:FDS_METRICS``, ``interactcs_gym.tau2.metrics:TAU2_METRICS``)
and the env class declares it (``metric_family``); :mod:`interactcs_gym.evaluation.metrics`
resolves an env's family from that declaration.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Episode outcome status values of a record (see :mod:`~interactcs_gym.evaluation.store`).
STATUS_OK = "ok"
STATUS_AGENT_ERROR = "agent_error"
STATUS_ENV_ERROR = "env_error"
#: A chat back-end (LLM server of the agent, user simulator or judge) failed after its retries: an
#: infrastructure failure, not the agent's. Counted, never scored, replayed by the next rerun.
STATUS_BACKEND_ERROR = "backend_error"
#: Statuses whose episodes are not scored (counted in the Errors column only).
UNSCORED_STATUSES = (STATUS_ENV_ERROR, STATUS_BACKEND_ERROR)
#: Every status, in report order.
ALL_STATUSES = (STATUS_OK, STATUS_AGENT_ERROR, STATUS_ENV_ERROR, STATUS_BACKEND_ERROR)


@dataclass(frozen=True)
class Metric:
    """One column of a report.

    ``percent``: per-episode values are fractions in [0, 1] and the column shows them x100.
    ``judged``: the value comes from the dialogue-quality judge (n/a until one is configured;
    labelled "heuristic" when the judge is).
    ``reduce``: how a seed's episodes combine, ``"mean"`` (rates, scores) or ``"sum"`` (totals,
    e.g. τ²'s matched gold actions, which the paper reports as a count over the benchmark).
    """

    key: str
    label: str
    percent: bool = False
    digits: int = 2
    judged: bool = False
    help: str = ""
    reduce: str = "mean"

    def __post_init__(self) -> None:
        if self.reduce not in ("mean", "sum"):
            raise ValueError(f"Metric {self.key!r}: reduce must be 'mean' or 'sum', got {self.reduce!r}")


@dataclass
class MetricFamily:
    """Per-episode values of a set of metrics.

    ``episode_values(record) -> {metric key: float | None}`` is called for every recorded episode
    whose status is ``ok`` or ``agent_error`` (env and back-end errors are counted, never scored);
    ``None`` means
    "no value for this episode" (e.g. no judge) and is left out of the means.
    ``utility`` / ``cost`` name the metrics of the Pareto plot's y and x axes.
    """

    name: str
    title: str
    metrics: tuple[Metric, ...]
    episode_values: Callable[[Mapping[str, Any]], dict[str, float | None]]
    utility: str
    cost: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(f"metric family {self.name!r} has no metric {key!r}; "
                       f"it has {[m.key for m in self.metrics]}")


# ---------------------------------------------------------------------------- per-episode helpers
def final_info(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return record.get("final_info") or {}


def float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def judged_quality(record: Mapping[str, Any], attr: str) -> float | None:
    quality = record.get("quality")
    if not quality or quality.get("error"):
        return None
    return float_or_none(quality.get(attr))


def all_turns_well_formed(record: Mapping[str, Any]) -> bool:
    """FR for envs without a ``finished_ok`` key: no agent error and every turn ``format_ok``."""
    if record.get("status") != STATUS_OK:
        return False
    return all(t.get("format_ok", True) for t in record.get("per_turn") or [])


def generic_episode_values(record: Mapping[str, Any]) -> dict[str, float | None]:
    """Values any env of the contract has: return (sum of rewards), FR, session cost, turns."""
    return {
        "return": float_or_none(record.get("return")),
        "fr": float(all_turns_well_formed(record)),
        "cost": float_or_none(record.get("cost_total")),
        "turns": float_or_none(record.get("turns")),
    }


COST = Metric("cost", "Cost", digits=2, help="mean session cost (sum of info['cost'])")
TURNS = Metric("turns", "Turns", digits=1, help="mean agent turns per session")

GENERIC_METRICS = MetricFamily(
    name="generic",
    title="Generic dialogue env",
    metrics=(
        Metric("return", "Return", digits=3, help="sum of rewards of the session"),
        Metric("fr", "FR (%)", percent=True, digits=1, help="sessions with every turn well formed"),
        COST,
        TURNS,
    ),
    episode_values=generic_episode_values,
    utility="return",
    cost="cost",
)

# ---------------------------------------------------------------------------- aggregation
@dataclass(frozen=True)
class Aggregate:
    """``mean ± std`` over seeds of the per-seed mean over users; ``n`` episodes with a value."""

    mean: float | None
    std: float | None
    n: int
    seeds: int

    def format(self, metric: Metric) -> str:
        if self.mean is None:
            return "n/a"
        scale = 100.0 if metric.percent else 1.0
        return f"{self.mean * scale:.{metric.digits}f} ± {self.std * scale:.{metric.digits}f}"


def mean_std_over_seeds(values: Iterable[tuple[int, float | None]], reduce: str = "mean") -> Aggregate:
    """Aggregate ``(seed_index, value)`` pairs as the paper reports a metric over S seeds.

    For each seed s:  m_s = mean over the users u of x_{u,s}  (``None`` values left out; with
    ``reduce="sum"``, m_s = the sum over the users);
    then  mean = (1/S') sum_s m_s  and  std = sqrt((1/S') sum_s (m_s - mean)^2)  over the S' seeds
    that have at least one value (population standard deviation, numpy's default ``ddof=0``).
    """
    by_seed: dict[int, list[float]] = defaultdict(list)
    n = 0
    for seed_index, value in values:
        if value is None:
            continue
        by_seed[seed_index].append(float(value))
        n += 1
    if not by_seed:
        return Aggregate(None, None, 0, 0)
    seed_means = [sum(v) / (len(v) if reduce == "mean" else 1) for _, v in sorted(by_seed.items())]
    mean = sum(seed_means) / len(seed_means)
    std = math.sqrt(sum((m - mean) ** 2 for m in seed_means) / len(seed_means))
    return Aggregate(mean, std, n, len(seed_means))


def summarize_episodes(family: MetricFamily,
                       records: Iterable[Mapping[str, Any]]) -> dict[str, Aggregate]:
    """Every metric of ``family`` over the scored records (status ``ok`` or ``agent_error``)."""
    columns: dict[str, list[tuple[int, float | None]]] = {m.key: [] for m in family.metrics}
    for record in records:
        if record.get("status") in UNSCORED_STATUSES:
            continue
        values = family.episode_values(record)
        for key in columns:
            columns[key].append((int(record["seed_index"]), values.get(key)))
    reduce = {m.key: m.reduce for m in family.metrics}
    return {key: mean_std_over_seeds(pairs, reduce[key]) for key, pairs in columns.items()}
