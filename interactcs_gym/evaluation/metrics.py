"""Which metric family an env gets, and families by name.

Which family an env gets (:func:`family_for_env`), first match wins:

1. the env class attribute ``metric_family`` (on ``env.unwrapped``): a :class:`MetricFamily`
   instance, a family name of :data:`METRIC_FAMILIES` or a ``"module:attribute"`` path. Every env
   of the suite declares its own (``FoodDeliveryServiceEnv.metric_family`` is the ``fds`` family,
   ``Tau2Env.metric_family = "interactcs_gym.tau2.metrics:TAU2_METRICS"``); a new env declares
   its family and the evaluation loop, the store and the report need no change;
2. without an env instance, the same attribute of the class the id is registered with (read from
   its gymnasium entry point; the env is not built);
3. ``generic`` (:data:`~interactcs_gym.core.metrics.GENERIC_METRICS`).

The resolved spec is written in every episode record (``metric_family``), so ``report`` re-reads a
results file with the same family without building the env. The classes, the statuses and the
mean ± std aggregation live in :mod:`interactcs_gym.core.metrics`.
"""

from __future__ import annotations

from typing import Any

from interactcs_gym.core.metrics import GENERIC_METRICS, MetricFamily
from interactcs_gym.core.names import load_attr

#: Families by short name -> the family or its ``"module:attribute"`` path (loaded on first use).
#: :func:`register_metric_family` adds to it.
METRIC_FAMILIES: dict[str, MetricFamily | str] = {
    "generic": GENERIC_METRICS,
    "fds": "interactcs_gym.fds.metrics:FDS_METRICS",
    "tau2": "interactcs_gym.tau2.metrics:TAU2_METRICS",
}


def register_metric_family(family: MetricFamily) -> None:
    """Make ``family`` resolvable by its name (e.g. in a results file's ``metric_family``)."""
    METRIC_FAMILIES[family.name] = family


def resolve_family(spec: str | MetricFamily) -> MetricFamily:
    """A family from an instance, a name of :data:`METRIC_FAMILIES` or a ``"module:attribute"`` path."""
    if isinstance(spec, MetricFamily):
        return spec
    known = METRIC_FAMILIES.get(spec, spec)
    if isinstance(known, MetricFamily):
        return known
    if ":" not in known:
        raise ValueError(f"unknown metric family {spec!r}: use one of {sorted(METRIC_FAMILIES)} "
                         f"or 'module:attribute'")
    family = load_attr(known, what="metric family")
    if not isinstance(family, MetricFamily):
        raise TypeError(f"{known} is a {type(family).__name__}, not a MetricFamily")
    return family


def family_spec_for_env(env_id: str, env: Any = None) -> str:
    """The family spec (name or ``module:attribute``) for an env; see the module docstring."""
    declared = getattr(getattr(env, "unwrapped", env), "metric_family", None) if env is not None \
        else _declared_by_entry_point(env_id)
    if isinstance(declared, MetricFamily):
        register_metric_family(declared)
        return declared.name
    if isinstance(declared, str) and declared:
        resolve_family(declared)  # fail now, not when the report is written
        return declared
    return GENERIC_METRICS.name


def family_for_env(env_id: str, env: Any = None) -> MetricFamily:
    return resolve_family(family_spec_for_env(env_id, env))


def _declared_by_entry_point(env_id: str) -> Any:
    """``metric_family`` of the class ``env_id`` is registered with, or ``None``."""
    import gymnasium as gym

    try:
        entry_point = gym.spec(env_id.split(":", 1)[-1]).entry_point
    except gym.error.Error:
        return None
    if not isinstance(entry_point, str):
        return getattr(entry_point, "metric_family", None)
    try:
        return getattr(load_attr(entry_point, what="env entry point"), "metric_family", None)
    except ValueError:
        return None
