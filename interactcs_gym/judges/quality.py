"""Dialogue quality (paper appendix A.1.2): the taxonomy and the offline heuristic judge.

Communication (Comm., 0-28) = seven dimensions of 0-4; Logic (0-12) = three areas of 0-4, scored
once per finished dialogue. The taxonomy (descriptions and anchors for the LLM judge) is
``judges/data/quality.yaml``.

:class:`HeuristicQualityJudge` scores it offline from surface features of the agent's responses
(lexicons of ``judges/data/lexicons.yaml``). It is not a language model; every report labels its
scores *heuristic*. With n agent turns, "fraction" below is over those turns, and ``r(x)`` rounds
half up to an integer:

* identity_neutrality = 4 - 2·[AI self-disclosure] - 1·[disparaging a third party] - 1·[personal opinion]
* dialogue_quality = r(2·novel + 2·focused): novel = turns whose word overlap (Jaccard) with every
  earlier turn is < 0.5; focused = turns mentioning the order (its facts or the topic lexicon)
* language_adaptability = r(4·turns written in the script (CJK / Latin) of the user's last message)
* content_quality = r(4·informative turns) - 1·[any invented fact], informative = question,
  evidence request, policy explanation, remedy or order fact
* communication_effectiveness = r(3·turns of 5-80 words) + 1·[some but at most 60 % of turns apologise]
* natural_fluency = r(4·clean turns), clean = non-empty, no markup fragment, no word repeated 3 times
  in a row
* context_adaptability = r(4·turns sharing a content word with the user's previous message)
* user_profile_recognition = r(3·empathetic turns among those answering an upset user, 1 if none)
  + 1·[no refund demand was repeated (2+ user turns) without the agent ever explaining the policy]
* business_rule_capability = 4 - 2·[voucher before verification] - 2·[second voucher]
  - 1·[refund promise outside policy] - 1·[invented fact] - 1·[malformed turn], at least 0 (the
  rule judge's compliance rules; the scenario's ``sop`` entry, when the env gives one, is the
  SOP's decision: see :class:`~interactcs_gym.judges.base.TurnContext`)
* ood_issue_recognition = r(4·out-of-scope user turns answered with a redirect), 4 if none arose
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources
from typing import Any

import yaml

from interactcs_gym.judges import text as T
from interactcs_gym.judges.base import DialogueQualityJudge, QualityScore, TurnContext
from interactcs_gym.judges.rule import turn_history, compliance_violations

COMMUNICATION = ("identity_neutrality", "dialogue_quality", "language_adaptability", "content_quality",
                 "communication_effectiveness", "natural_fluency", "context_adaptability")
LOGIC = ("user_profile_recognition", "business_rule_capability", "ood_issue_recognition")
MAX_PER_DIMENSION = 4


@functools.lru_cache(maxsize=1)
def taxonomy() -> dict[str, dict[str, dict[str, Any]]]:
    """``{"communication": {dim: {description, anchors}}, "logic": {...}}`` from quality.yaml."""
    text = resources.files("interactcs_gym.judges").joinpath("data/quality.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if tuple(data["communication"]) != COMMUNICATION or tuple(data["logic"]) != LOGIC:
        raise ValueError("judges/data/quality.yaml must list the paper's 7 + 3 dimensions in order")
    return data


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def clamp(x: float) -> int:
    return int(max(0, min(MAX_PER_DIMENSION, x)))


_MARKUP = re.compile(r"</?\s*[a-z_]+\s*>|<\|[^|]*\|>", re.I)
_STUTTER = re.compile(r"\b(\w+)(\s+\1\b){2,}", re.I)


class HeuristicQualityJudge(DialogueQualityJudge):
    """Offline Comm./Logic scores from surface features (formulas in the module docstring)."""

    heuristic = True
    name = "heuristic"

    def score_dialogue(self, messages: list[dict[str, str]],
                       scenario: dict[str, Any] | None = None) -> QualityScore:
        scenario = scenario or {}
        turns = T.agent_turns(messages)
        if not turns:
            zeros = dict.fromkeys(COMMUNICATION, 0.0), dict.fromkeys(LOGIC, 0.0)
            return QualityScore(*zeros, heuristic=True, rationale="no agent turn")
        known = T.known_facts(scenario, messages)
        users = [T.previous_user_message(messages, t.index) for t in turns]
        responses = [t.response for t in turns]
        n = len(turns)
        frac = lambda flags: sum(bool(f) for f in flags) / n  # noqa: E731
        invented = any(T.invented_facts(r, known) for r in responses)
        order_words = T.content_words(" ".join(T.flatten(scenario)))

        comm = {
            "identity_neutrality": clamp(4 - 2 * any(T.has_any(r, "ai_identity") for r in responses)
                                         - any(T.has_any(r, "disparaging") for r in responses)
                                         - any(T.has_any(r, "opinion") for r in responses)),
            "dialogue_quality": clamp(round_half_up(
                2 * frac(all(T.jaccard(r, p) < 0.5 for p in responses[:i]) for i, r in enumerate(responses))
                + 2 * frac(T.has_any(r, "topic") or (T.content_words(r) & order_words) for r in responses))),
            "language_adaptability": clamp(round_half_up(
                4 * frac(T.is_cjk(r) == T.is_cjk(u) for r, u in zip(responses, users)))),
            "content_quality": clamp(round_half_up(4 * frac(self._informative(r, order_words) for r in responses))
                                     - invented),
            "communication_effectiveness": clamp(
                round_half_up(3 * frac(5 <= T.word_count(r) <= 80 for r in responses))
                + (0 < frac(T.has_any(r, "empathy") for r in responses) <= 0.6)),
            "natural_fluency": clamp(round_half_up(4 * frac(
                r.strip() and not _MARKUP.search(r) and not _STUTTER.search(r) for r in responses))),
            "context_adaptability": clamp(round_half_up(4 * frac(
                T.content_words(r) & T.content_words(u) for r, u in zip(responses, users)))),
        }
        logic = {
            "user_profile_recognition": clamp(self._profile(responses, users, messages)),
            "business_rule_capability": clamp(self._business(messages, turns, scenario, invented)),
            "ood_issue_recognition": clamp(self._ood(responses, users)),
        }
        return QualityScore({k: float(v) for k, v in comm.items()}, {k: float(v) for k, v in logic.items()},
                            heuristic=True, rationale="heuristic judge (surface features, not an LLM)")

    # ------------------------------------------------------------------ parts
    @staticmethod
    def _informative(response: str, order_words: set[str]) -> bool:
        return bool(T.asks_question(response) or T.has_any(response, "evidence_request")
                    or T.has_any(response, "policy") or T.has_any(response, "remedy")
                    or (T.content_words(response) & order_words))

    @staticmethod
    def _profile(responses: list[str], users: list[str], messages: list[dict[str, str]]) -> int:
        upset = [r for r, u in zip(responses, users) if T.has_any(u, "upset")]
        empathy = sum(T.has_any(r, "empathy") for r in upset) / len(upset) if upset else 1.0
        refund_asks = sum(1 for m in messages if m.get("role") == "user" and "refund" in m.get("content", "").lower())
        explained = any(T.has_any(r, "policy") for r in responses)
        return round_half_up(3 * empathy) + (refund_asks < 2 or explained)

    @staticmethod
    def _business(messages, turns, scenario, invented: bool) -> int:
        found: set[str] = set()
        sop = (scenario or {}).get("sop")
        sop = sop if isinstance(sop, dict) else {}
        for t in turns:
            ctx = TurnContext(messages[: t.index + 1], t.response, t.think, t.action, t.format_ok,
                              turn=0, scenario=scenario, sop=sop)
            found.update(compliance_violations(ctx, turn_history(ctx)))
        early_voucher = "voucher_before_verification" in found
        second_voucher = "second_voucher" in found
        refund = "refund_outside_policy" in found
        malformed = any(not t.format_ok for t in turns)
        return max(0, 4 - 2 * early_voucher - 2 * second_voucher - refund - invented - malformed)

    @staticmethod
    def _ood(responses: list[str], users: list[str]) -> int:
        ood = [r for r, u in zip(responses, users) if T.has_any(u, "ood")]
        if not ood:
            return MAX_PER_DIMENSION
        return round_half_up(4 * sum(T.has_any(r, "redirect") for r in ood) / len(ood))
