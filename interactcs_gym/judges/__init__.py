"""Judges: the GenRM process reward (per agent turn) and the dialogue-quality judge (per dialogue).

``make_process_judge("rule" | "llm", **kw)`` and ``make_quality_judge("heuristic" | "llm", **kw)``
build them by name (also ``"module:Class"`` for your own judge). The LLM judges take a chat
back-end (``backend=`` and back-end kwargs such as ``base_url=``, ``model=``, or the ``INTERACTCS_JUDGE_LLM_*`` /
``INTERACTCS_LLM_*`` environment variables); the rule and heuristic judges work offline.
Nothing here imports ``openai`` or torch until an LLM judge is built.
"""

from __future__ import annotations

from typing import Any

from interactcs_gym.core.names import build
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


def make_process_judge(name: str | ProcessRewardJudge = "rule", **kwargs: Any) -> ProcessRewardJudge:
    """A process-reward judge by name: ``"rule"`` (offline) or ``"llm"`` (GenRM on a chat back-end)."""
    return build("process judge", PROCESS_JUDGES, ProcessRewardJudge, name, kwargs)


def make_quality_judge(name: str | DialogueQualityJudge = "heuristic", **kwargs: Any) -> DialogueQualityJudge:
    """A dialogue-quality judge by name: ``"heuristic"`` (offline, labelled heuristic) or ``"llm"``."""
    return build("quality judge", QUALITY_JUDGES, DialogueQualityJudge, name, kwargs)


__all__ = ["DialogueQualityJudge", "ProcessRewardJudge", "QualityScore", "TurnContext", "TurnScore",
           "PROCESS_JUDGES", "QUALITY_JUDGES", "make_process_judge", "make_quality_judge"]
