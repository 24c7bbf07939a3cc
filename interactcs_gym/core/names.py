"""Names of pluggable parts: ``"module:attribute"`` paths and the short-name tables built on them.

Agents, user simulators, judges, chat back-ends and metric families are named in kwargs, configs
and on the command line either by a short name of their table (``"sop"``, ``"persona"``,
``"rule"``, ``"openai"``) or by a ``"module:Class"`` path; :func:`build` turns either (or an
instance) into an object, :func:`load_attr` loads a path.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


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


def build(kind: str, table: Mapping[str, str], base: type[T], spec: Any,
          kwargs: Mapping[str, Any] | None = None) -> T:
    """An instance of ``base`` from ``spec``: an instance (returned as is), a short name of
    ``table`` (-> ``"module:Class"``) or a ``"module:Class"`` path, called with ``kwargs``.

    Errors name ``kind``: ``ValueError`` for an unknown name or kwargs given with an instance,
    ``TypeError`` for a spec of another type or a class that does not build a ``base``.
    """
    kwargs = dict(kwargs or {})
    if isinstance(spec, base):
        if kwargs:
            raise ValueError(f"kwargs {sorted(kwargs)} cannot apply to an existing {kind} instance")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{kind} must be a name, 'module:Class' or a {base.__name__}, "
                        f"got {type(spec).__name__}")
    target = table.get(spec, spec)
    if ":" not in target:
        raise ValueError(f"unknown {kind} {spec!r}: use one of {sorted(table)}, 'module:Class' or "
                         f"a {base.__name__} instance")
    obj = load_attr(target, what=kind)(**kwargs)
    if not isinstance(obj, base):
        raise TypeError(f"{target} builds a {type(obj).__name__}, not a {base.__name__}")
    return obj
