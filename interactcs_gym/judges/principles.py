"""GenRM principles as data, and the turn-level process reward (paper Eq. 6 and section 4.2.2).

For agent turn t each principle k gets s_k in {0, 0.5, 1} (violation, partial, full) and

    p_t = sum_k w_k * s_k / sum_k w_k    in [0, 1].

The default principles and weights are ``judges/data/principles.yaml``; any YAML file of the same
shape can replace them (``load_principles("my_principles.yaml")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from interactcs_gym.judges.base import PRINCIPLE_SCORES

DEFAULT_PRINCIPLES = "data/principles.yaml"


@dataclass(frozen=True)
class Principle:
    """One evaluation principle: name, weight w_k > 0, what it asks, its rubric, its offline rule."""

    name: str
    weight: float
    description: str
    rubric: dict[str, str] = field(default_factory=dict)
    rule: str | None = None


def load_principles(source: str | Path | list[Principle] | None = None) -> list[Principle]:
    """The principles of a YAML file (default: the packaged ones), validated.

    A list of :class:`Principle` is validated and returned as is.
    """
    if isinstance(source, list):
        principles = source
    else:
        if source is None:
            text = resources.files("interactcs_gym.judges").joinpath(DEFAULT_PRINCIPLES).read_text("utf-8")
            where = f"interactcs_gym/judges/{DEFAULT_PRINCIPLES}"
        else:
            text, where = Path(source).read_text(encoding="utf-8"), str(source)
        principles = _parse(yaml.safe_load(text), where)
    if not principles:
        raise ValueError("at least one principle is needed")
    names = [p.name for p in principles]
    if len(set(names)) != len(names):
        raise ValueError(f"principle names must be unique, got {names}")
    for p in principles:
        if not p.weight > 0:
            raise ValueError(f"principle {p.name!r}: weight must be > 0, got {p.weight}")
    return principles


def _parse(data: Any, where: str) -> list[Principle]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of principle name -> fields")
    out = []
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: principle {name!r} must be a mapping")
        unknown = set(entry) - {"weight", "description", "rubric", "rule"}
        if unknown:
            raise ValueError(f"{where}: principle {name!r} has unknown fields {sorted(unknown)}")
        if "weight" not in entry or "description" not in entry:
            raise ValueError(f"{where}: principle {name!r} needs a weight and a description")
        try:
            weight = float(entry["weight"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: principle {name!r}: weight must be a number") from None
        rubric = {str(k): str(v) for k, v in (entry.get("rubric") or {}).items()}
        out.append(Principle(str(name), weight, str(entry["description"]).strip(), rubric,
                             entry.get("rule")))
    return out


def process_reward(scores: dict[str, float], principles: list[Principle]) -> float:
    """p = sum_k w_k s_k / sum_k w_k over the principles present in ``scores``.

    Every score must be one of {0, 0.5, 1}. Principles absent from ``scores`` are left out of both
    sums (e.g. the rule judge on a principle that has no rule).

    >>> ps = [Principle("a", 2.0, ""), Principle("b", 1.0, "")]
    >>> process_reward({"a": 1.0, "b": 0.5}, ps)   # (2*1 + 1*0.5) / 3
    0.8333333333333334
    """
    num = den = 0.0
    for p in principles:
        if p.name not in scores:
            continue
        s = float(scores[p.name])
        if s not in PRINCIPLE_SCORES:
            raise ValueError(f"score of {p.name!r} must be one of {PRINCIPLE_SCORES}, got {s}")
        num += p.weight * s
        den += p.weight
    if den == 0:
        raise ValueError("no principle was scored")
    return num / den
