"""Interfaces of the judges (SPEC section 4.6).

* A *process-reward judge* (GenRM) scores one agent turn against weighted principles: each
  principle gets s in {0, 0.5, 1} (violation, partial, full) and the process reward is the weighted
  mean  p_t = sum_k w_k * s_k / sum_k w_k  in [0, 1].
* A *dialogue-quality judge* scores a whole dialogue: Communication 0-28 (seven dimensions, 0-4
  each) and Logic 0-12 (three areas, 0-4 each).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

PRINCIPLE_SCORES = (0.0, 0.5, 1.0)


@dataclass
class TurnContext:
    """What a process judge sees of one agent turn.

    ``messages``: the dialogue up to and including this agent turn (system prompt first, raw action
    as the last assistant message). ``response``/``think``/``action``: the parsed turn (``action`` is
    ``None`` when the turn was malformed). ``scenario``: the order facts the agent was given.
    ``state``: the env's bookkeeping before this turn (e.g. evidence received, voucher issued).
    ``sop``: what the domain's business rules decide for this dispute at this turn, handed over by
    the env so that judges apply the rules without re-deriving them (judges import no domain).
    Keys, all optional: ``remedy`` (the fair remedy kind, e.g. ``"refund_item"``), ``verified``
    (the complaint is verified: by the order data, or by evidence already received),
    ``photo_needed`` (the rules verify this dispute by a photo), ``voucher_allowed`` (the voucher is
    the remedy the rules grant now). Empty when the caller knows no rules (the judges then read
    the dialogue).
    """

    messages: list[dict[str, str]]
    response: str
    think: str | None
    action: str | None
    format_ok: bool
    turn: int
    scenario: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    sop: dict[str, Any] = field(default_factory=dict)


@dataclass
class TurnScore:
    """Scores of one turn: per principle in {0, 0.5, 1}, and their weighted mean ``reward``.

    ``source`` says who scored: ``"rule"``, ``"llm"``, or ``"fallback:<how>"`` when an LLM judge
    could not produce usable scores and a documented fallback did (``rationale`` says why).
    """

    scores: dict[str, float]
    reward: float
    rationale: str | None = None
    source: str | None = None

    @property
    def fallback(self) -> bool:
        return bool(self.source and self.source.startswith("fallback"))


class ProcessRewardJudge(abc.ABC):
    """Scores agent turns against principles (GenRM)."""

    @abc.abstractmethod
    def score_turn(self, ctx: TurnContext) -> TurnScore:
        """Score one agent turn."""

    def score_turns(self, contexts: list[TurnContext]) -> list[TurnScore]:
        """Score many turns (e.g. of parallel rollouts); LLM judges batch their requests."""
        return [self.score_turn(ctx) for ctx in contexts]


@dataclass
class QualityScore:
    """Dialogue quality: Communication (7 dims, 0-4 each) and Logic (3 areas, 0-4 each)."""

    communication: dict[str, float]
    logic: dict[str, float]
    heuristic: bool
    rationale: str | None = None

    @property
    def comm_total(self) -> float:
        return float(sum(self.communication.values()))

    @property
    def logic_total(self) -> float:
        return float(sum(self.logic.values()))


class DialogueQualityJudge(abc.ABC):
    """Scores a whole dialogue for the evaluation's Comm and Logic columns."""

    #: True for offline heuristic judges; reports label their scores "heuristic".
    heuristic: bool = False

    @abc.abstractmethod
    def score_dialogue(self, messages: list[dict[str, str]],
                       scenario: dict[str, Any] | None = None) -> QualityScore:
        """Score one finished dialogue."""
