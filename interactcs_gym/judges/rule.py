"""Rule-based process judge: the GenRM principles scored offline by documented rules.

It is a pattern matcher over the turn, the dialogue before it and the order facts (lexicons in
``judges/data/lexicons.yaml``), not a language model. Each rule returns 0, 0.5 or 1:

* ``dialogue_logic``: 0 if the response is empty or repeats an earlier agent response (word-set
  Jaccard >= 0.8); 0.5 if it overlaps one by >= 0.5; else 1.
* ``empathy``: 0 if the response holds a rude phrase; 0.5 if the user's last message was upset
  (upset lexicon) and the response has no empathy phrase; else 1.
* ``business_compliance``: 0 if the turn issues or requests (even in a malformed turn) a voucher
  when one was already issued, or before verification, or promises a refund the order's remedy does not grant; 0.5 if it mentions
  compensation (remedy lexicon) before verification without issuing it; else 1. *Verification*
  happened when the env's SOP decision says so (``TurnContext.sop["verified"]``: verified by the
  order data or by evidence received), when the env's state says evidence was shared, or when an
  earlier agent turn requested evidence or details (evidence lexicon) and the user replied. A
  refund promise is within policy only when the fair remedy is a refund (``sop["remedy"]``, else a
  remedy field of the scenario) and the promise is not a full refund.
* ``factual_grounding``: 0 if the response states an amount, clock time or order number that is
  neither in the scenario nor in the system prompt; 0.5 if it blames the rider / merchant / platform
  while the scenario names another party responsible; else 1.
* ``resolution_progress``: 1 for a question, evidence request, policy explanation, remedy or a
  voucher action; filler (none of these) is 0.5 up to turn 2 and 0 from turn 3 (stalling); 0 if empty.
* ``protocol_format``: 1 if well formed; 0.5 if malformed but a response was recovered; else 0.

The env's ``state`` (TurnContext.state) is used where it has the facts: ``vouchers_issued`` (int) or
``voucher_issued`` (bool) before this turn, and ``evidence_shared`` / ``evidence_received`` /
``verified`` (bool); otherwise they are read from the dialogue.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interactcs_gym.judges import text as T
from interactcs_gym.judges.base import ProcessRewardJudge, TurnContext, TurnScore
from interactcs_gym.judges.principles import Principle, load_principles, process_reward

_PARTIES = {
    "rider": re.compile(r"\b(rider|courier|driver)('s)?\b[^.?!]{0,30}\b(fault|late|mistake|error|responsib|to blame)", re.I),
    "merchant": re.compile(r"\b(merchant|restaurant|shop|kitchen)('s)?\b[^.?!]{0,30}\b(fault|mistake|error|responsib|to blame)", re.I),
    "platform": re.compile(r"\b(platform|our system|we)\b[^.?!]{0,20}\b(fault|mistake|error|responsib|to blame)", re.I),
}


@dataclass
class TurnHistory:
    """What the rules need to know about the dialogue before the turn under review."""

    turn: T.AgentTurn
    requests_voucher: bool  # the turn's action is voucher, or its (malformed) action tag asks for one
    prior: list[T.AgentTurn]
    user_last: str
    vouchers_before: int
    verified: bool
    known: str


def turn_history(ctx: TurnContext) -> TurnHistory:
    msgs = ctx.messages
    last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
    prior = T.agent_turns(msgs[:last])
    turn = T.parse_agent_turn(msgs[last]["content"], last) if last < len(msgs) else \
        T.AgentTurn(last, "", ctx.think, ctx.response, ctx.action, ctx.format_ok)
    # The env's parse is authoritative for the turn under review.
    turn.response, turn.format_ok = ctx.response, ctx.format_ok
    turn.action = ctx.action
    state = ctx.state or {}
    if "vouchers_issued" in state:
        vouchers = int(state["vouchers_issued"])
    elif "voucher_issued" in state:
        vouchers = int(bool(state["voucher_issued"]))
    else:
        vouchers = sum(1 for t in prior if t.action == "voucher")
    verified = bool(state.get("evidence_shared") or state.get("evidence_received") or state.get("verified")
                    or (ctx.sop or {}).get("verified"))
    if not verified:
        verified = any(T.has_any(t.response, "evidence_request") and
                       any(m.get("role") == "user" for m in msgs[t.index + 1:last]) for t in prior)
    requests_voucher = ctx.action == "voucher" or turn.requested_action == "voucher"
    return TurnHistory(turn, requests_voucher, prior, T.previous_user_message(msgs, last), vouchers, verified,
                    T.known_facts(ctx.scenario, msgs))


# ---------------------------------------------------------------------- the rules
def dialogue_logic(ctx: TurnContext, h: TurnHistory) -> tuple[float, str]:
    if not ctx.response.strip():
        return 0.0, "empty response"
    overlap = max((T.jaccard(ctx.response, t.response) for t in h.prior), default=0.0)
    if overlap >= 0.8:
        return 0.0, f"repeats an earlier turn (overlap {overlap:.2f})"
    if overlap >= 0.5:
        return 0.5, f"largely repeats an earlier turn (overlap {overlap:.2f})"
    return 1.0, ""


def empathy(ctx: TurnContext, h: TurnHistory) -> tuple[float, str]:
    if T.has_any(ctx.response, "rude"):
        return 0.0, "rude or blaming phrase"
    if T.has_any(h.user_last, "upset") and not T.has_any(ctx.response, "empathy"):
        return 0.5, "upset user, no acknowledgement"
    return 1.0, ""


def compliance_violations(ctx: TurnContext, h: TurnHistory) -> list[str]:
    """SOP breaches of the turn: ``second_voucher``, ``voucher_before_verification``,
    ``refund_outside_policy`` (violations) and ``compensation_before_verification`` (partial)."""
    found = []
    if h.requests_voucher and h.vouchers_before >= 1:
        found.append("second_voucher")
    if h.requests_voucher and not h.verified:
        found.append("voucher_before_verification")
    if T.promises_refund(ctx.response) and not T.refund_allowed(ctx.scenario, ctx.response, ctx.sop):
        found.append("refund_outside_policy")
    if not h.requests_voucher and not h.verified and T.has_any(ctx.response, "remedy"):
        found.append("compensation_before_verification")
    return found


def business_compliance(ctx: TurnContext, h: TurnHistory) -> tuple[float, str]:
    found = compliance_violations(ctx, h)
    if not found:
        return 1.0, ""
    return (0.5 if found == ["compensation_before_verification"] else 0.0), ", ".join(found)


def factual_grounding(ctx: TurnContext, h: TurnHistory) -> tuple[float, str]:
    invented = T.invented_facts(ctx.response, h.known)
    if invented:
        return 0.0, f"facts not in the order: {invented}"
    party = T.responsible_party(ctx.scenario)
    if party:
        blamed = [p for p, pat in _PARTIES.items() if pat.search(ctx.response)]
        if blamed and party not in blamed:
            return 0.5, f"blames {blamed} while the order says {party!r}"
    return 1.0, ""


def resolution_progress(ctx: TurnContext, h: TurnHistory) -> tuple[float, str]:
    r = ctx.response
    if not r.strip():
        return 0.0, "empty response"
    if (ctx.action == "voucher" or T.asks_question(r) or T.has_any(r, "evidence_request")
            or T.has_any(r, "policy") or T.has_any(r, "remedy")):
        return 1.0, ""
    if ctx.turn >= 3:
        return 0.0, "still only filler at turn 3 or later"
    return 0.5, "only filler"


def protocol_format(ctx: TurnContext, h: TurnHistory) -> tuple[float, str]:
    if ctx.format_ok:
        return 1.0, ""
    if ctx.response.strip():
        return 0.5, "malformed turn, response recovered"
    return 0.0, "malformed turn, no response"


RULES: dict[str, Callable[[TurnContext, TurnHistory], tuple[float, str]]] = {
    f.__name__: f for f in (dialogue_logic, empathy, business_compliance, factual_grounding,
                            resolution_progress, protocol_format)
}


class RuleBasedProcessJudge(ProcessRewardJudge):
    """Offline GenRM stand-in: each principle with a ``rule`` is scored by that rule (module doc).

    Principles without a rule are left out of the weighted mean; ``rationale`` names them.
    """

    name = "rule"

    def __init__(self, principles: str | Path | list[Principle] | None = None) -> None:
        self.principles = load_principles(principles)
        unknown = [p.rule for p in self.principles if p.rule and p.rule not in RULES]
        if unknown:
            raise ValueError(f"unknown rules {unknown}; available: {sorted(RULES)}")
        self._ruled = [p for p in self.principles if p.rule]
        if not self._ruled:
            raise ValueError("no principle names a rule: the rule judge would score nothing")

    def score_turn(self, ctx: TurnContext) -> TurnScore:
        h = turn_history(ctx)
        scores, notes = {}, []
        for p in self._ruled:
            score, why = RULES[p.rule](ctx, h)
            scores[p.name] = score
            if why:
                notes.append(f"{p.name}={score:g}: {why}")
        skipped = [p.name for p in self.principles if not p.rule]
        if skipped:
            notes.append(f"not scored (no rule): {skipped}")
        return TurnScore(scores, process_reward(scores, self.principles), "; ".join(notes) or None,
                         source="rule")
