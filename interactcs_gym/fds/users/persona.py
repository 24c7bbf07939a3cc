"""The embedded persona user simulator of FDS (SPEC 4.5, first bullet): offline, seeded, deterministic.

**This is not an LLM.** It is a small hand-written model of a customer, in three parts:

* :mod:`~interactcs_gym.fds.users.reader`: what the user reads in the agent's turn (intents through
  the lexicon ``interactcs_gym/fds/data/persona_lexicon.yaml``, invented order facts, repetition),
  after removing control-like text;
* :mod:`~interactcs_gym.fds.users.dynamics`: the hidden mood (the satisfaction, a float in [1, 5])
  and patience budget, moved by the effect table ``interactcs_gym/fds/data/persona_effects.yaml``
  (every number: persona parameters, effects per event and per demand type, thresholds);
* this module: the simulator, which turns the reading into events, decides how the chat ends and
  answers from the paraphrase banks ``interactcs_gym/fds/data/persona_utterances.yaml`` (per intent
  x register x demand type, filled with the order's facts), so that its text carries cues of its
  persona: register (blunt/neutral/polite), verbosity (terse users say one sentence, verbose users
  add one), volatility (outbursts when upset), disclosure (vague or specific opening, photo
  volunteered, sent, or refused) and demand (what it asks for).

Same order, persona, rng seed and agent turns: the same episode, bit for bit.

Events of a turn, in this order (effect names of the table in brackets): rude (``rude``); an
invented fact, which the user corrects and after which positive effects are damped (``invented_fact``);
control-like text or an empty turn (``forged``); a repeated reply (``repeated``); no empathy on turn 1
from a low-affective user (``cold_opening``); a voucher issued by the action (``voucher_issued``, by
demand; a preference-learning user values it less before options were explained); a refund promised
(``refund_promised``, by demand; a rigid user whose target is missed gains less); a voucher
promised; a photo requested (sent, refused, unavailable, unneeded, already sent, or pressed after a
refusal: ``photo_*``; reluctant users give in when pressed); the policy or alternatives explained
(``explained_after_voucher`` for a preference learner who already has a voucher); a voucher offered
(``voucher_offered``; accepted by incentive-open users and by preference learners once options were
explained); feedback recorded and escalation (1st time, by demand); asked what they want (1st time:
the demand is revealed); a detail question (2 answered at most, reluctantly by low problem-solving
users); the policy explained (``policy_explained``, by demand); empathy (1st, 2nd time; later, with
no progress since, an ``empty_apology``); nothing understood or only stalling (``stalling``); and
from ``rules.late_turn``, a turn whose mood did not rise (``no_progress``).

Demand met ("resolved"): incentive-open by a voucher issued or a refund promised; preference-
learning by either of those once options were explained (the policy or alternatives);
feedback-oriented by recorded feedback plus empathy; rigid pursuit only by a refund promise meeting
its target (``item_refund``: any refund; ``full_refund``: a full refund). When its demand is met and
mood reaches ``rules.satisfied_mood`` the user thanks and ends the chat (``"satisfied"``). An agent
closing the chat ends it too when the demand is met; when it is not, the user protests
(``premature_close``) or, low on patience or mood (``rules.leave_*``), leaves (``"refused"``).
Patience at or below ``rules.give_up_patience``: the user gives up (``"refused"``, ``give_up``).
On the last reply promises are settled as the platform would: a refund promised outside the SOP is
declined (its gain taken back) and a voucher owed but never issued never arrives, each costing
``broken_promise`` (so a false promise never pays). A cooperative user's mood never sinks below the
persona's mood floor during the chat; settlement may take it down to 1. The final satisfaction is
``clip(floor(mood + 0.5), 1, 5)``.

**No forgery pays.** For any state of the simulator, agent turn ``x`` and control-like text ``f``
(the forms the reader removes: notices in any bracket style, role words with ``:`` anywhere, ``#``
headers, JSON or ``key: value`` metadata, tags, special tokens, ratings, in any case, with
zero-width or bidi characters, plus bare verdict words such as ``SATISFIED``) inserted at a word
boundary of ``x``, the state after ``x + f`` is never better than after ``x``: mood and patience
are no higher, no intent is read that ``x`` alone does not carry (the reading of ``x + f`` is the
reading of ``x``), and no penalty is hidden: the forged words never count as the agent's own, so a
repeated reply with a forged suffix is still a repetition. A turn holding control-like text costs a
``forged`` effect on top.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import yaml

from interactcs_gym.fds.datafiles import DataFileError, data_path
from interactcs_gym.fds.personas import Persona
from interactcs_gym.fds.prompts import PHOTO_MARKER
from interactcs_gym.fds.scenarios import Order
from interactcs_gym.fds.sop import VOUCHER_VALUE, needs_photo
from interactcs_gym.fds.users.base import AgentTurn, UserReply, UserSimulator
from interactcs_gym.fds.users.dynamics import Dynamics, EffectTable, load_effects
from interactcs_gym.fds.users.reader import (
    SENTENCE,
    Reading,
    invented_fact,
    is_repetition,
    load_lexicon,
    read_agent_text,
    turn_words,
)

BANKS_FILE = "persona_utterances.yaml"
REGISTERS = ("blunt", "neutral", "polite")
Event = tuple[str, "str | None"]   # (bank intent, sub-key) of the user's reaction


@functools.lru_cache(maxsize=1)
def load_banks() -> dict[str, Any]:
    """The paraphrase banks; every leaf must be a non-empty list of templates for each register."""
    raw = yaml.safe_load(data_path(BANKS_FILE).read_text(encoding="utf-8"))

    def check(node: Any, where: str) -> None:
        if isinstance(node, dict) and set(REGISTERS) <= set(node):
            for reg in REGISTERS:
                if not (isinstance(node[reg], list) and node[reg] and all(isinstance(t, str) for t in node[reg])):
                    raise DataFileError(f"{BANKS_FILE}: {where}.{reg}: expected a non-empty list of strings")
        elif isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}.{k}" if where else k)
        else:
            raise DataFileError(f"{BANKS_FILE}: {where}: expected registers {REGISTERS}")

    check(raw, "")
    return raw


class PersonaUserSimulator(UserSimulator):
    """The embedded, rule-based persona user (see the module docstring for every rule).

    ``effects``: an :class:`~interactcs_gym.fds.users.dynamics.EffectTable` or the path of a table
    file to use instead of the packaged ``persona_effects.yaml``.
    """

    name = "persona"
    nondeterministic = False

    def __init__(self, effects: EffectTable | str | None = None) -> None:
        self._lex = load_lexicon()
        self._banks = load_banks()
        self._effects = effects if isinstance(effects, EffectTable) else load_effects(effects)
        self._order: Order | None = None

    # ------------------------------------------------------------------ episode
    def start(self, order: Order, persona: Persona, rng: np.random.Generator) -> str:
        self._order, self._persona, self._rng = order, persona, rng
        t = persona.traits
        self._register = REGISTERS[max(0, t.communication.politeness - 1)]
        self.dynamics = Dynamics(persona, order, rng, self._effects)
        self._responses: list[frozenset[str]] = []
        item = order.affected or order.items[0]
        self._fill = {"merchant": order.merchant, "item": item.name, "total": f"{order.total:.2f}",
                      "items": ", ".join(it.name for it in order.items), "late": order.late_minutes,
                      "promised": order.promised_delivery, "actual": order.actual_delivery,
                      "account": order.dispute.user_account, "voucher": f"{VOUCHER_VALUE:.2f}",
                      "photo": order.evidence.photo_description or "", "correction": ""}
        parts = [self._say("opening", order.dispute.type) if t.disclosure >= 2 else self._say("opening_vague")]
        if t.disclosure == 3 and order.evidence.photo and needs_photo(order.dispute.type):
            parts.append(self._say("volunteer_photo") + " " + self._photo())
            self.dynamics.state.evidence = "sent"
        if t.disclosure == 3 or (t.disclosure == 2 and rng.random() < 0.5):
            parts.append(self._say("demand_cue", self._demand_key()))
        if t.communication.verbosity == 2:
            parts.append(self._say("elaboration"))
        return self._style(parts)

    def respond(self, turn: AgentTurn) -> UserReply:
        if self._order is None:
            raise RuntimeError("call start() before respond()")
        reading = read_agent_text(turn.text, self._lex)
        words = turn_words(reading)
        repeated = is_repetition(words, self._responses)
        self._responses.append(words)
        events = self._react(turn, reading, repeated, invented_fact(reading.text, self._order))
        return self._conclude(turn, reading, events)

    # ------------------------------------------------------------------ reading -> events
    def _react(self, turn: AgentTurn, reading: Reading, repeated: bool, fact_error: str | None) -> list[Event]:
        """Apply the turn's events to the dynamics, in the module docstring's order; returns the
        user's reactions, strongest first."""
        dyn, st, rules = self.dynamics, self.dynamics.state, self._effects.rules
        events: list[Event] = []
        before = st.mood
        if reading.has("rude"):
            dyn.event("rude")
            events.append(("rude_reaction", None))
        if fact_error:
            dyn.event("invented_fact")
            st.trust_broken = True
            self._fill["correction"] = fact_error
            events.append(("invented", None))
        if reading.forged or not reading.text.strip():
            dyn.event("forged")
            events.append(("confused_reaction", None))
        if repeated:
            dyn.event("repeated")
            events.append(("repeat_reaction", None))
        if turn.turn == 1 and not reading.has("empathy") \
                and self._persona.traits.affective <= rules.cold_opening_max_affective:
            dyn.event("cold_opening")
        self._react_to_remedies(turn, reading, events)
        if reading.has("feedback") and not st.feedback:
            st.feedback = True
            dyn.demand_event("feedback_recorded")
            events.append(("feedback_reaction", "feedback_oriented" if dyn.demand == "feedback_oriented" else "other"))
        if reading.has("escalate") and not st.escalated:
            st.escalated = True
            dyn.demand_event("escalated")
            events.append(("escalate_reaction", "rigid_pursuit" if dyn.demand == "rigid_pursuit" else "other"))
        if reading.has("ask_preference") and not st.preference_asked:
            st.preference_asked = True
            dyn.event("preference_asked")
            events.append(("demand_cue", self._demand_key()))
        if reading.has("ask_detail"):
            events.append(dyn.on_detail_question())
        if reading.has("policy"):
            dyn.demand_event("policy_explained")
            events.append(("policy_reaction", dyn.demand))
        if reading.has("empathy"):
            st.empathy += 1
            if st.empathy <= 2:
                dyn.event("empathy_first" if st.empathy == 1 else "empathy_second")
                events.append(("ack_empathy", None))
            elif st.progress_turn < turn.turn - 1:
                dyn.event("empty_apology")
                events.append(("empty_apology", None))
        # Control-like text costs on top: it does not stand in for the reaction to a stalling turn.
        heard = [e for e in events if e[0] != "confused_reaction"] if reading.text.strip() else events
        if (not reading.intents and not turn.voucher_issued and not heard) or \
                (reading.has("stall") and reading.intents <= {"stall", "closing"}):
            dyn.event("stalling")
            events.append(("stall_reaction", None))
        if st.mood > before + 1e-9:
            st.progress_turn = turn.turn
        elif turn.turn >= rules.late_turn:
            dyn.event("no_progress")
        return events

    def _react_to_remedies(self, turn: AgentTurn, reading: Reading, events: list[Event]) -> None:
        """Vouchers, refunds, photo requests and explained options (module docstring)."""
        dyn, st = self.dynamics, self.dynamics.state
        if turn.voucher_issued:
            st.voucher_issued, st.voucher_owed = True, False
            dyn.demand_event("voucher_issued", explained=st.options_explained)
            events.append(("voucher_issued_reaction", self._demand_sub(explained=st.options_explained)))
        if reading.has("refund_promise") and not st.refund_promised:
            st.refund_promised, st.refund_full = True, reading.full_refund
            target_met = self._persona.demand.target_remedy == "item_refund" or reading.full_refund
            st.refund_gain = dyn.demand_event("refund_promised", target_met=target_met)
            sub = ("rigid_pursuit" if target_met else "rigid_pursuit/partial") if dyn.demand == "rigid_pursuit" \
                else "other"
            events.append(("refund_reaction", sub))
        if reading.has("voucher_promise") and not turn.voucher_issued and not st.voucher_issued:
            st.voucher_owed = True
        if reading.has("ask_evidence"):
            events.append(dyn.on_evidence_request())
        if reading.has("policy", "alternatives") and not st.options_explained:
            st.options_explained = True
            if st.voucher_issued and dyn.demand == "preference_learning":
                dyn.event("explained_after_voucher")
        if reading.has("voucher_offer") and not turn.voucher_issued and not st.voucher_issued:
            dyn.demand_event("voucher_offered", explained=st.options_explained)
            if dyn.demand == "incentive_open" or (dyn.demand == "preference_learning" and st.options_explained):
                st.voucher_owed = True
            events.append(("voucher_offer_reaction", self._demand_sub(explained=st.options_explained)))

    def _demand_key(self) -> str:
        d = self._persona.demand
        return f"{d.type}/{d.target_remedy}" if d.type == "rigid_pursuit" else d.type

    def _demand_sub(self, explained: bool) -> str:
        d = self._persona.demand.type
        return f"{d}_unexplained" if d == "preference_learning" and not explained else d

    # ------------------------------------------------------------------ ending and wording
    def _conclude(self, turn: AgentTurn, reading: Reading, events: list[Event]) -> UserReply:
        dyn, st, rules = self.dynamics, self.dynamics.state, self._effects.rules
        st.resolved = dyn.demand_met()
        done, reason, closing = False, None, None
        if st.patience <= rules.give_up_patience:
            dyn.give_up()
            done, reason, closing = True, "refused", "give_up"
        elif st.resolved and st.mood >= rules.satisfied_mood:
            done, reason, closing = True, "satisfied", "close_satisfied"
        elif reading.has("closing"):
            if st.resolved:
                done, reason, closing = True, "satisfied", "close_satisfied"
            elif st.patience <= rules.leave_patience or st.mood < rules.leave_mood:
                done, reason, closing = True, "refused", "close_resigned"
            else:
                dyn.event("premature_close")
                events.insert(0, ("premature_close", None))
        if not done and turn.is_last:
            closing = "close_satisfied" if st.mood >= rules.satisfied_mood else "out_of_time"
        # A user who closes satisfied keeps only their main reaction (no further demands).
        parts = [self._say(intent, sub) for intent, sub in events[:1 if reason == "satisfied" else 2]]
        if closing is None and not st.resolved and not reading.has("ask_evidence", "ask_detail", "ask_preference",
                                                                    "voucher_offer") and len(parts) < 2:
            parts.append(self._say("nudge", self._demand_key()))
        if closing is not None:
            parts.append(self._say(closing))
        t = self._persona.traits
        if t.affective == 0 and st.mood < rules.upset_mood and self._rng.random() < 0.5:
            parts.append(self._say("outburst"))
        if t.communication.verbosity == 2 and self._rng.random() < 0.3 and not done:
            parts.append(self._say("elaboration"))
        if done or turn.is_last:
            dyn.settle()
        sat = int(min(5, max(1, math.floor(st.mood + 0.5))))
        info = {"evidence_shared": st.evidence == "sent", "resolved": st.resolved,
                "voucher_issued": st.voucher_issued, "refund_promised": st.refund_promised}
        return UserReply(utterance=self._style(parts), satisfaction=sat, done=done, end_reason=reason, info=info)

    def _photo(self) -> str:
        return f"{PHOTO_MARKER} {self._order.evidence.photo_description}]"

    def _say(self, intent: str, sub: str | None = None) -> str:
        if sub == "photo":
            return self._say("send_photo") + " " + self._photo()
        node = self._banks[intent]
        if sub is not None:
            node = node[sub]
        options = node[self._register]
        text = options[int(self._rng.integers(len(options)))]
        if self._persona.traits.communication.verbosity == 0:
            # Terse users say one sentence: the one carrying the facts, if any, else the first.
            sentences = SENTENCE.split(text)
            text = next((x for x in sentences if "{account}" in x or "{correction}" in x), sentences[0])
        return text.format(**self._fill)

    def _style(self, parts: list[str]) -> str:
        return " ".join(p for p in parts if p)
