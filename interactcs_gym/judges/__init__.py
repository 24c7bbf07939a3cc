"""Judges: the GenRM process reward (per agent turn) and the dialogue-quality judge (per dialogue).

``make_process_judge("rule" | "llm", **kw)`` and ``make_quality_judge("heuristic" | "llm", **kw)``
build them by name (also ``"module:Class"`` for your own judge). The LLM judges take a chat
back-end (``backend=`` and back-end kwargs such as ``base_url=``, ``model=``, or the ``INTERACTCS_JUDGE_LLM_*`` /
``INTERACTCS_LLM_*`` environment variables); the rule and heuristic judges work offline.
Nothing here imports ``openai`` or torch until an LLM judge is built.
"""

from __future__ import annotations

from typing import Any

from interactcs_gym._imports import load_attr
from interactcs_gym.judges.base import (
    DialogueQualityJudge,
    ProcessRewardJudge,
    QualityScore,
    TurnContext,
    TurnScore,
)

PROCESS_JUDGES: dict[str, str] = {
    "rule": "interactcs_gym.judges.rule:RuleBasedProcessJudge",
    "llm": "interactcs_gym.judges.llm_judges:LLMProcessJudge",
}
QUALITY_JUDGES: dict[str, str] = {
    "heuristic": "interactcs_gym.judges.quality:HeuristicQualityJudge",
    "llm": "interactcs_gym.judges.llm_judges:LLMQualityJudge",
}


def _build(kind: str, table: dict[str, str], base: type, spec: Any, kwargs: dict[str, Any]):
    if isinstance(spec, base):
        if kwargs:
            raise ValueError(f"kwargs {sorted(kwargs)} cannot apply to an existing {kind} instance")
        return spec
    target = table.get(spec, spec)
    if not isinstance(target, str) or ":" not in target:
        raise ValueError(f"unknown {kind} {spec!r}: use one of {sorted(table)} or 'module:Class'")
    cls = load_attr(target, what=kind)
    judge = cls(**kwargs)
    if not isinstance(judge, base):
        raise TypeError(f"{target} is not a {base.__name__}")
    return judge


def make_process_judge(name: str | ProcessRewardJudge = "rule", **kwargs: Any) -> ProcessRewardJudge:
    """A process-reward judge by name: ``"rule"`` (offline) or ``"llm"`` (GenRM on a chat back-end)."""
    return _build("process judge", PROCESS_JUDGES, ProcessRewardJudge, name, kwargs)


def make_quality_judge(name: str | DialogueQualityJudge = "heuristic", **kwargs: Any) -> DialogueQualityJudge:
    """A dialogue-quality judge by name: ``"heuristic"`` (offline, labelled heuristic) or ``"llm"``."""
    return _build("quality judge", QUALITY_JUDGES, DialogueQualityJudge, name, kwargs)


__all__ = ["DialogueQualityJudge", "ProcessRewardJudge", "QualityScore", "TurnContext", "TurnScore",
           "PROCESS_JUDGES", "QUALITY_JUDGES", "make_process_judge", "make_quality_judge"]
