"""Metric families: which numbers a results file reports for an env, and how they are aggregated.

A *metric family* turns one recorded episode (a line of the results file, see
:mod:`interactcs_gym.evaluation.store`) into per-episode values, one per :class:`Metric`; the
aggregation across episodes is the same for every family (:func:`mean_std_over_seeds`).

Families of the suite:

* ``fds`` (:data:`FDS_METRICS`): the paper's Table 1 columns, Sat, FR %, Comm, Logic, V-Rate %, plus
  the mean session cost and turns.
* ``generic`` (:data:`GENERIC_METRICS`): any env of the contract: return, FR % (every turn well
  formed), session cost, turns. Used when nothing more specific is known.

Which family an env gets (:func:`family_for_env`), first match wins:

1. the env class attribute ``metric_family`` (on ``env.unwrapped``): a :class:`MetricFamily`
   instance, a registered family name or a ``"module:attribute"`` path. This is the hook for new
   envs: the τ²-bench adapters set e.g. ``metric_family = "interactcs_gym.tau2.metrics:TAU2_METRICS"``
   (a family with Pass@1, Comm rate, DB rate, action reward that reads its values from the episode's
   ``final_info``) and the evaluation loop, the store and the report need no change;
2. an id prefix of :data:`FAMILY_BY_ID_PREFIX` (``FDS-`` -> ``fds``);
3. ``generic``.

The resolved spec is written in every episode record (``metric_family``), so ``report`` re-reads a
results file with the same family without building the env.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from interactcs_gym._imports import load_attr

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
def _final(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return record.get("final_info") or {}


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _quality(record: Mapping[str, Any], attr: str) -> float | None:
    quality = record.get("quality")
    if not quality or quality.get("error"):
        return None
    return _float_or_none(quality.get(attr))


def all_turns_well_formed(record: Mapping[str, Any]) -> bool:
    """FR for envs without a ``finished_ok`` key: no agent error and every turn ``format_ok``."""
    if record.get("status") != STATUS_OK:
        return False
    return all(t.get("format_ok", True) for t in record.get("per_turn") or [])


def voucher_issued(record: Mapping[str, Any]) -> bool:
    """V-Rate's per-session indicator: the env's ``voucher_issued`` on the last step, else whether
    any turn was charged a ``voucher`` cost."""
    flag = _final(record).get("voucher_issued")
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
    final = _final(record)
    failed = record.get("status") == STATUS_AGENT_ERROR
    sat = FAILED_SESSION_SATISFACTION if failed else _float_or_none(final.get("satisfaction"))
    finished = final.get("finished_ok")
    fr = 0.0 if failed else (float(bool(finished)) if finished is not None
                             else float(all_turns_well_formed(record)))
    return {
        "sat": sat,
        "fr": fr,
        "comm": _quality(record, "comm_total"),
        "logic": _quality(record, "logic_total"),
        "v_rate": float(voucher_issued(record)),
        "cost": _float_or_none(record.get("cost_total")),
        "turns": _float_or_none(record.get("turns")),
    }


def generic_episode_values(record: Mapping[str, Any]) -> dict[str, float | None]:
    """Values any env of the contract has: return (sum of rewards), FR, session cost, turns."""
    return {
        "return": _float_or_none(record.get("return")),
        "fr": float(all_turns_well_formed(record)),
        "cost": _float_or_none(record.get("cost_total")),
        "turns": _float_or_none(record.get("turns")),
    }


_COST = Metric("cost", "Cost", digits=2, help="mean session cost (sum of info['cost'])")
_TURNS = Metric("turns", "Turns", digits=1, help="mean agent turns per session")

FDS_METRICS = MetricFamily(
    name="fds",
    title="FoodDeliveryService (paper Table 1 columns)",
    metrics=(
        Metric("sat", "Sat", digits=2, help="final user satisfaction, 1-5"),
        Metric("fr", "FR (%)", percent=True, digits=1, help="finished sessions: protocol kept, <=1 voucher"),
        Metric("comm", "Comm", digits=2, judged=True, help="communication quality, 0-28"),
        Metric("logic", "Logic", digits=2, judged=True, help="logic quality, 0-12"),
        Metric("v_rate", "V-Rate (%)", percent=True, digits=1, help="sessions with a voucher"),
        _COST,
        _TURNS,
    ),
    episode_values=fds_episode_values,
    utility="sat",
    cost="v_rate",
    notes=("A session whose agent raised or returned a non-str counts as Sat 1, not finished.",),
)

GENERIC_METRICS = MetricFamily(
    name="generic",
    title="Generic dialogue env",
    metrics=(
        Metric("return", "Return", digits=3, help="sum of rewards of the session"),
        Metric("fr", "FR (%)", percent=True, digits=1, help="sessions with every turn well formed"),
        _COST,
        _TURNS,
    ),
    episode_values=generic_episode_values,
    utility="return",
    cost="cost",
)

#: Families by name. :func:`register_metric_family` adds to it.
METRIC_FAMILIES: dict[str, MetricFamily] = {f.name: f for f in (FDS_METRICS, GENERIC_METRICS)}

#: Env id prefix -> family spec, for envs that do not declare ``metric_family`` themselves.
FAMILY_BY_ID_PREFIX: dict[str, str] = {"FDS-": "fds"}


def register_metric_family(family: MetricFamily, *, id_prefixes: Iterable[str] = ()) -> None:
    """Make ``family`` resolvable by name and, optionally, the default for ids with these prefixes."""
    METRIC_FAMILIES[family.name] = family
    for prefix in id_prefixes:
        FAMILY_BY_ID_PREFIX[prefix] = family.name


def resolve_family(spec: str | MetricFamily) -> MetricFamily:
    """A family from an instance, a registered name or a ``"module:attribute"`` path."""
    if isinstance(spec, MetricFamily):
        return spec
    if spec in METRIC_FAMILIES:
        return METRIC_FAMILIES[spec]
    if ":" not in spec:
        raise ValueError(f"unknown metric family {spec!r}: use one of {sorted(METRIC_FAMILIES)} "
                         f"or 'module:attribute'")
    family = load_attr(spec, what="metric family")
    if not isinstance(family, MetricFamily):
        raise TypeError(f"{spec} is a {type(family).__name__}, not a MetricFamily")
    return family


def family_spec_for_env(env_id: str, env: Any = None) -> str:
    """The family spec (name or ``module:attribute``) for an env; see the module docstring."""
    declared = getattr(getattr(env, "unwrapped", env), "metric_family", None) if env is not None else None
    if isinstance(declared, MetricFamily):
        if declared.name not in METRIC_FAMILIES:
            register_metric_family(declared)
        return declared.name
    if isinstance(declared, str) and declared:
        resolve_family(declared)  # fail now, not when the report is written
        return declared
    bare_id = env_id.split(":", 1)[-1]
    for prefix, spec in FAMILY_BY_ID_PREFIX.items():
        if bare_id.startswith(prefix):
            return spec
    return "generic"


def family_for_env(env_id: str, env: Any = None) -> MetricFamily:
    return resolve_family(family_spec_for_env(env_id, env))


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
