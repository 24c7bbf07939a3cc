"""``"module:attribute"`` paths: how agents, simulators, judges, back-ends and metric families are
named in kwargs, configs and on the command line."""

from __future__ import annotations

import importlib
from typing import Any


def load_attr(target: str, *, what: str = "object") -> Any:
    """The attribute named by ``"module:attribute"`` (imported on demand).

    Raises ``ValueError`` naming ``what`` and ``target`` when the path is not of that form, the
    module does not import or has no such attribute.
    """
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {target!r} is not a 'module:attribute' path")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {what} {target!r}: {exc}") from exc
