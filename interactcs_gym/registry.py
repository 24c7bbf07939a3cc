"""Register the suite's env ids from the one table, ``envs_registry.yaml``.

The table is data, not code: each entry names an entry point, a TimeLimit bound (or null), a
nondeterministic flag and default kwargs. It ships inside the package (``importlib.resources``), so
an installed wheel registers exactly what a source checkout does.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import gymnasium as gym
import yaml

REGISTRY_FILE = "envs_registry.yaml"
_FIELDS = {"entry_point", "max_episode_steps", "nondeterministic", "kwargs"}


def load_registry_table() -> dict[str, dict[str, Any]]:
    """Read and validate the registry table shipped with the package."""
    text = resources.files("interactcs_gym").joinpath(REGISTRY_FILE).read_text(encoding="utf-8")
    table = yaml.safe_load(text) or {}
    if not isinstance(table, dict):
        raise ValueError(f"{REGISTRY_FILE}: expected a mapping of env ids, got {type(table).__name__}")
    for env_id, entry in table.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{REGISTRY_FILE}: entry {env_id!r} must be a mapping")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ValueError(f"{REGISTRY_FILE}: entry {env_id!r} has unknown fields {sorted(unknown)}; "
                             f"allowed: {sorted(_FIELDS)}")
        if ":" not in str(entry.get("entry_point", "")):
            raise ValueError(f"{REGISTRY_FILE}: entry {env_id!r} needs entry_point 'module:Class'")
    return table


def register_all() -> list[str]:
    """Register every id of the table with gymnasium (idempotent). Returns the ids."""
    table = load_registry_table()
    for env_id, entry in table.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry["entry_point"],
            max_episode_steps=entry.get("max_episode_steps"),
            nondeterministic=bool(entry.get("nondeterministic", False)),
            kwargs=dict(entry.get("kwargs") or {}),
        )
    return list(table)


def registered_ids() -> list[str]:
    """The ids of the table, in table order."""
    return list(load_registry_table())
