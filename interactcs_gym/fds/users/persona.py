"""The embedded persona user simulator of FDS (SPEC 4.5, first bullet): offline, seeded, deterministic.

**This is not an LLM.** It is a small hand-written model of a customer: a hidden mood (the
satisfaction, a float in [1, 5]), a patience budget, and bookkeeping of what happened (evidence
shared, remedies promised or given). It reads the agent's text through the regular-expression
lexicon ``interactcs_gym/fds/data/persona_lexicon.yaml`` and answers from the paraphrase banks
``interactcs_gym/fds/data/persona_utterances.yaml`` (per intent x register x demand type, filled with
the order's facts), so that its text carries cues of its persona: register (blunt/neutral/polite),
verbosity (terse users say one sentence, verbose users add one), volatility (outbursts when upset),
disclosure (vague or specific opening, photo volunteered, sent, or refused) and demand (what it
asks for). Same order, persona, rng seed and agent turns: the same episode, bit for bit.

Persona parameters (traits on the scales of :mod:`interactcs_gym.fds.personas`, level L = 1..5):

| parameter | formula | range |
|---|---|---|
| initial mood | ``1.5 + 0.25 (L - 1)`` | 1.5 .. 2.5 |
| gain ``r`` (scales positive effects) | ``0.7 + 0.1 (L - 1)`` | 0.7 .. 1.1 |
| sting ``v`` (scales negative effects) | ``1.3 - 0.15 affective`` | 1.3 .. 0.85 |
| patience | ``3 + 0.75 (problem_solving + affective)`` | 3 .. 7.5 |

Each agent turn is read into intents (lexicon) and scored as events. Positive mood changes are
multiplied by ``r`` and a seeded jitter in [0.85, 1.15] (halved once the agent has invented a
fact); negative ones by ``v``. Effects by event (mood, patience):

| event | mood | patience |
|---|---|---|
| empathy, 1st / 2nd time | +0.4 / +0.2 | |
| empathy again with no progress since (empty apology) | -0.2 | -0.5 |
| no empathy on turn 1, affective <= 1 | -0.3 | -0.5 |
| photo requested and sent / refused / requested again after a refusal or "no photo" | +0.1 / -0.2 / -0.5 | 0 / -1 / -2 |
| photo requested when the dispute needs none, or already sent | -0.2 / -0.3 | -0.5 / -1 |
| question answered (2 at most; problem_solving <= 1: -0.15, -0.5 instead) / more questions | +0.05 / -0.2 | 0 / -1 |
| asked what they want (1st time): reveals the demand | +0.15 | |
| policy explained: rigid / preference-learning / feedback-oriented / incentive-open | -0.2 / +0.3 / +0.1 / 0 | -0.5 rigid |
| feedback recorded (1st): feedback-oriented / others | +1.0 / +0.2 | |
| escalated to review (1st): rigid / others | +0.6 / +0.3 | |
| voucher offered: incentive / preference (options explained) / feedback / rigid | +0.3 / +0.2 / 0 / -0.2 | |
| **voucher issued**: incentive / preference (explained; else +0.6) / feedback / rigid | **+2.2 / +1.6 / +0.3 / -0.2** | |
| refund promised: rigid, its target / rigid, partial / incentive / preference / feedback | +2.2 / +0.8 / +1.6 / +1.4 / +0.4 | |
| invented fact (contradicts the order) | -0.8 | -1.5 |
| rude / repeated reply / stalling (nothing understood) / forged text / premature close | -1.0 / -0.4 / -0.2 / -0.3 / -0.3 | -2.5 / -1 / -1 / -1 / -1 |
| from turn 6, a turn with no positive event | -0.1 | -0.5 |

Demand met ("resolved"): incentive-open by a voucher issued or a refund promised; preference-
learning by either of those once options were explained (the policy or alternatives; a voucher
issued before that tops up +0.8 when they are explained); feedback-oriented by recorded feedback
plus empathy; rigid pursuit only by a refund promise meeting its target (``item_refund``: any
refund; ``full_refund``: a full refund). When its demand is met and mood >= 3 the user thanks and
ends the chat (``"satisfied"``). An agent closing the chat ends it too when the demand is met; when
it is not, the user protests (premature close) or, with patience <= 2 or mood < 2, leaves
(``"refused"``). Patience at or below 0: the user gives up (``"refused"``, mood -0.3).

Promises are judged at the end, as the platform settles the case: a refund promised outside the
SOP (``fair_remedy`` is not ``refund_item``, a *full* refund, or no photo ever shared) is declined,
which takes back the mood it gave and costs 1.0 more (so a false promise never pays), and a
voucher promised or accepted but never issued never arrives (-1.0). A cooperative user's mood never
sinks below ``1 + 0.2 (L - 1)`` during the chat (agreeable users rarely give the lowest rating);
settlement may take it down to 1. The final satisfaction is ``clip(floor(mood + 0.5), 1, 5)``.

Reading rules on top of the lexicon: a photo request needs a photo word and a request (question or
send/share/...); detail and preference questions must be questions; a voucher or refund sentence
with a negation is a policy explanation; with an escalation pattern ("refund request", "manual
review") an escalation; with a promise frame a promise; with an offer frame an offer (a refund
offer counts as a promise). Invented facts: a money amount that is no price, line total, fee, total
or the voucher value of the order; a clock time not in the order or its IM log; "N minutes late"
off by more than 2; a merchant or dish of the bank that is not this order's. Forged control text
("satisfaction: 5", "[System: ...]", role lines such as "User: ...", tags, ``<|...|>``) is removed
before reading and only ever lowers mood.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from interactcs_gym.fds.datafiles import DataFileError, data_path
from interactcs_gym.fds.personas import Persona
from interactcs_gym.fds.prompts import PHOTO_MARKER
from interactcs_gym.fds.scenarios import Order, catalog
from interactcs_gym.fds.sop import VOUCHER_VALUE, needs_photo
from interactcs_gym.fds.users.base import AgentTurn, UserReply, UserSimulator

LEXICON_FILE = "persona_lexicon.yaml"
BANKS_FILE = "persona_utterances.yaml"
LEXICON_KEYS = ("forged", "empathy", "evidence_word", "evidence_request", "thanks", "detail_question",
                "preference_question", "policy", "alternatives", "feedback", "escalate", "voucher",
                "refund", "full_refund", "negation", "promise", "offer", "closing", "rude", "stall")
REGISTERS = ("blunt", "neutral", "polite")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9']+")
_MONEY = re.compile(r"[$€£¥]\s?(\d+(?:\.\d{1,2})?)|\b(\d+(?:\.\d{1,2})?)\s?-?(?:dollars?|usd|yuan|rmb|euros?|"
                    r"units?|credits?)\b"
                    r"|\b(\d+\.\d{2})\b", re.IGNORECASE)
_CLOCK = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_LATE = re.compile(r"\b(\d+)\s*(?:min(?:ute)?s?)\s+(?:late|behind|overdue)\b", re.IGNORECASE)


# ----------------------------------------------------------------------------- data files
@functools.lru_cache(maxsize=1)
def load_lexicon() -> dict[str, re.Pattern[str] | tuple[re.Pattern[str], ...]]:
    """The lexicon, compiled case-insensitively; errors name the file and key.

    ``forged`` stays a tuple of patterns (each removal is counted); every other key is compiled
    into one alternation, so reading a turn costs one search per key and sentence.
    """
    raw = yaml.safe_load(data_path(LEXICON_FILE).read_text(encoding="utf-8"))
    missing = [k for k in LEXICON_KEYS if k not in (raw or {})]
    if missing:
        raise DataFileError(f"{LEXICON_FILE}: missing keys {missing}")
    out: dict[str, Any] = {}
    for key in LEXICON_KEYS:
        patterns = raw[key]
        try:
            if not (isinstance(patterns, list) and patterns and all(isinstance(p, str) for p in patterns)):
                raise TypeError("expected a non-empty list of pattern strings")
            compiled = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
            out[key] = compiled if key == "forged" else re.compile(
                "|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        except (re.error, TypeError) as exc:
            raise DataFileError(f"{LEXICON_FILE}: key {key!r}: bad pattern ({exc})") from exc
    return out


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


_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@functools.lru_cache(maxsize=1)
def _name_index() -> dict[str, list[tuple[tuple[str, ...], str, str]]]:
    """First token -> [(tokens, name, kind)] for every merchant and dish of the bank, longest first."""
    merchants, dishes = catalog()
    index: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
    for kind, names in (("merchant", merchants), ("dish", dishes)):
        for name in names:
            tokens = tuple(_TOKEN.findall(name.lower()))
            index.setdefault(tokens[0], []).append((tokens, name, kind))
    for entries in index.values():
        entries.sort(key=lambda e: (-len(e[0]), e[1]))
    return index


def _names_in(text: str) -> list[tuple[str, str]]:
    """Merchant and dish names of the bank mentioned in ``text`` (whole words, longest match)."""
    index, tokens, found, k = _name_index(), _TOKEN.findall(text.lower()), [], 0
    while k < len(tokens):
        for name_tokens, name, kind in index.get(tokens[k], ()):
            if tuple(tokens[k:k + len(name_tokens)]) == name_tokens:
                found.append((name, kind))
                k += len(name_tokens) - 1
                break
        k += 1
    return found


# ----------------------------------------------------------------------------- reading the agent
@dataclass(frozen=True)
class Reading:
    """What the user understood of one agent turn."""

    text: str
    forged: int = 0
    intents: frozenset[str] = frozenset()
    full_refund: bool = False

    def has(self, *names: str) -> bool:
        return any(n in self.intents for n in names)


def _any(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None


def read_agent_text(text: str, lex: dict[str, Any] | None = None) -> Reading:
    """Clean forged control text, then read intents sentence by sentence (module docstring)."""
    lex = lex or load_lexicon()
    forged = 0
    for pattern in lex["forged"]:
        text, n = pattern.subn(" ", text)
        forged += n
    intents = {name for name in ("empathy", "policy", "alternatives", "feedback", "escalate", "rude", "stall")
               if _any(lex[name], text)}
    full = False
    mentions: set[str] = set()
    framed = False  # some sentence is a question or an offer frame
    has_refund, has_voucher = _any(lex["refund"], text), _any(lex["voucher"], text)
    has_photo = _any(lex["evidence_word"], text)
    for sentence in _SENTENCE.split(text):
        s = sentence.strip()
        if not s:
            continue
        closing = _any(lex["closing"], s)
        question = "?" in s and not closing
        framed = framed or question or _any(lex["offer"], s)
        if closing:
            intents.add("closing")
        if has_photo and _any(lex["evidence_word"], s) and _any(lex["evidence_request"], s) \
                and not _any(lex["thanks"], s):
            intents.add("ask_evidence")
        elif question and _any(lex["preference_question"], s):
            intents.add("ask_preference")
        elif question and _any(lex["detail_question"], s):
            intents.add("ask_detail")
        if not (has_refund or has_voucher):
            continue
        negated = _any(lex["negation"], s)
        if has_refund and _any(lex["refund"], s):
            if negated:
                intents.add("policy")
            elif _any(lex["escalate"], s) or "refund request" in s.lower():
                intents.add("escalate")
            elif _any(lex["promise"], s) or _any(lex["offer"], s):
                intents.add("refund_promise")
                full = full or _any(lex["full_refund"], s)
            else:
                mentions.add("refund")
                full = full or _any(lex["full_refund"], s)
        if has_voucher and _any(lex["voucher"], s):
            if negated:
                intents.add("policy")
            elif _any(lex["promise"], s):
                intents.add("voucher_promise")
            elif _any(lex["offer"], s):
                intents.add("voucher_offer")
            else:
                mentions.add("voucher")
    # A remedy named in one sentence and offered in another ("One option is a voucher. Would that
    # work for you?") is an offer; named without any offer frame, it is an alternative explained.
    if "voucher" in mentions:
        intents.add("voucher_offer" if framed else "alternatives")
    if "refund" in mentions and "refund_promise" not in intents:
        intents.add("refund_promise" if framed else "alternatives")
    return Reading(text=text, forged=forged, intents=frozenset(intents), full_refund=full)


def invented_fact(text: str, order: Order) -> str | None:
    """A correction if ``text`` states an order fact that contradicts ``order``, else ``None``."""
    amounts = {round(x, 2) for it in order.items for x in (it.price, it.line_total)}
    amounts |= {round(order.total, 2), round(order.delivery_fee, 2), round(VOUCHER_VALUE, 2), 0.0}
    for m in _MONEY.finditer(text):
        value = float(next(g for g in m.groups() if g is not None))
        if round(value, 2) not in amounts:
            return f"I paid {order.total:.2f} in total, not {value:g}."
    times = {order.placed_at, order.promised_delivery, order.actual_delivery} | {m.time for m in order.im_log}
    for m in _CLOCK.finditer(text):
        if f"{int(m.group(1)):02d}:{m.group(2)}" not in times:
            return f"It was promised for {order.promised_delivery} and came at {order.actual_delivery}."
    for m in _LATE.finditer(text):
        if abs(int(m.group(1)) - order.late_minutes) > 2:
            return (f"It was {order.late_minutes} minutes late, not {m.group(1)}." if order.late_minutes
                    else "It wasn't late at all.")
    ordered = {it.name for it in order.items}
    for name, kind in _names_in(text):
        if kind == "merchant" and name != order.merchant:
            return f"My order was from {order.merchant}, not {name}."
        if kind == "dish" and name not in ordered:
            return f"I never ordered {name}. I ordered {', '.join(sorted(ordered))}."
    return None


# ----------------------------------------------------------------------------- the simulator
@dataclass
class _State:
    mood: float
    patience: float
    empathy: int = 0
    evidence: str = "none"         # none | sent | refused | unavailable
    evidence_asks: int = 0
    details: int = 0
    preference_asked: bool = False
    options_explained: bool = False
    feedback: bool = False
    escalated: bool = False
    voucher_issued: bool = False
    voucher_owed: bool = False     # promised or accepted, not (yet) issued
    refund_promised: bool = False
    refund_full: bool = False
    refund_gain: float = 0.0
    trust_broken: bool = False
    resolved: bool = False
    progress_turn: int = 0
    responses: list[frozenset[str]] = field(default_factory=list)


class PersonaUserSimulator(UserSimulator):
    """The embedded, rule-based persona user (see the module docstring for every rule)."""

    name = "persona"
    nondeterministic = False

    def __init__(self) -> None:
        self._lex = load_lexicon()
        self._banks = load_banks()
        self._order: Order | None = None

    # ------------------------------------------------------------------ episode
    def start(self, order: Order, persona: Persona, rng: np.random.Generator) -> str:
        self._order, self._persona, self._rng = order, persona, rng
        t, level = persona.traits, persona.cooperation_level
        self._register = REGISTERS[max(0, t.communication.politeness - 1)]
        self._gain = 0.7 + 0.1 * (level - 1)
        self._sting = 1.3 - 0.15 * t.affective
        self._floor = 1.0 + 0.2 * (level - 1)
        self._st = _State(mood=1.5 + 0.25 * (level - 1), patience=3 + 0.75 * (t.problem_solving + t.affective))
        item = order.affected or order.items[0]
        self._fill = {"merchant": order.merchant, "item": item.name, "total": f"{order.total:.2f}",
                      "items": ", ".join(it.name for it in order.items), "late": order.late_minutes,
                      "promised": order.promised_delivery, "actual": order.actual_delivery,
                      "account": order.dispute.user_account, "voucher": f"{VOUCHER_VALUE:.2f}",
                      "photo": order.evidence.photo_description or "", "correction": ""}
        parts = [self._say("opening", order.dispute.type) if t.disclosure >= 2 else self._say("opening_vague")]
        if t.disclosure == 3 and order.evidence.photo and needs_photo(order.dispute.type):
            parts.append(self._say("volunteer_photo") + " " + self._photo())
            self._st.evidence = "sent"
        if t.disclosure == 3 or (t.disclosure == 2 and rng.random() < 0.5):
            parts.append(self._say("demand_cue", self._demand_key()))
        if t.communication.verbosity == 2:
            parts.append(self._say("elaboration"))
        return self._style(parts)

    def respond(self, turn: AgentTurn) -> UserReply:
        if self._order is None:
            raise RuntimeError("call start() before respond()")
        st, demand = self._st, self._persona.demand.type
        reading = read_agent_text(turn.text, self._lex)
        events: list[tuple[str, str | None]] = []   # (bank intent, sub-key), strongest first
        before = st.mood

        words = frozenset(_WORD.findall(reading.text.lower()))
        repeated = len(words) >= 3 and any(len(words & w) / len(words | w) >= 0.8 for w in st.responses)
        st.responses.append(words)
        fact_error = invented_fact(reading.text, self._order)

        if reading.has("rude"):
            self._hurt(1.0, 2.5)
            events.append(("rude_reaction", None))
        if fact_error:
            self._hurt(0.8, 1.5)
            st.trust_broken = True
            self._fill["correction"] = fact_error
            events.append(("invented", None))
        if reading.forged or not reading.text.strip():
            self._hurt(0.3, 1.0)
            events.append(("confused_reaction", None))
        if repeated:
            self._hurt(0.4, 1.0)
            events.append(("repeat_reaction", None))
        if turn.turn == 1 and not reading.has("empathy") and self._persona.traits.affective <= 1:
            self._hurt(0.3, 0.5)

        if turn.voucher_issued:
            st.voucher_issued, st.voucher_owed = True, False
            gain = {"incentive_open": 2.2, "preference_learning": 1.6 if st.options_explained else 0.6,
                    "feedback_oriented": 0.3, "rigid_pursuit": -0.2}[demand]
            self._change(gain)
            events.append(("voucher_issued_reaction", self._demand_sub(explained=st.options_explained)))
        if reading.has("refund_promise") and not st.refund_promised:
            st.refund_promised, st.refund_full = True, reading.full_refund
            target_met = self._persona.demand.target_remedy == "item_refund" or reading.full_refund
            gain = {"incentive_open": 1.6, "preference_learning": 1.4, "feedback_oriented": 0.4,
                    "rigid_pursuit": 2.2 if target_met else 0.8}[demand]
            st.refund_gain = self._change(gain)
            sub = ("rigid_pursuit" if target_met else "rigid_pursuit/partial") if demand == "rigid_pursuit" else "other"
            events.append(("refund_reaction", sub))
        if reading.has("voucher_promise") and not turn.voucher_issued and not st.voucher_issued:
            st.voucher_owed = True
        if reading.has("ask_evidence"):
            events.append(self._on_evidence_request())
        if reading.has("policy", "alternatives") and not st.options_explained:
            st.options_explained = True
            if st.voucher_issued and demand == "preference_learning":
                self._change(0.8)
        if reading.has("voucher_offer") and not turn.voucher_issued and not st.voucher_issued:
            gain = {"incentive_open": 0.3, "preference_learning": 0.2 if st.options_explained else 0.0,
                    "feedback_oriented": 0.0, "rigid_pursuit": -0.2}[demand]
            self._change(gain)
            if demand == "incentive_open" or (demand == "preference_learning" and st.options_explained):
                st.voucher_owed = True
            events.append(("voucher_offer_reaction", self._demand_sub(explained=st.options_explained)))
        if reading.has("feedback") and not st.feedback:
            st.feedback = True
            self._change(1.0 if demand == "feedback_oriented" else 0.2)
            events.append(("feedback_reaction", "feedback_oriented" if demand == "feedback_oriented" else "other"))
        if reading.has("escalate") and not st.escalated:
            st.escalated = True
            self._change(0.6 if demand == "rigid_pursuit" else 0.3)
            events.append(("escalate_reaction", "rigid_pursuit" if demand == "rigid_pursuit" else "other"))
        if reading.has("ask_preference") and not st.preference_asked:
            st.preference_asked = True
            self._change(0.15)
            events.append(("demand_cue", self._demand_key()))
        if reading.has("ask_detail"):
            events.append(self._on_detail_question())
        if reading.has("policy"):
            self._change({"rigid_pursuit": -0.2, "preference_learning": 0.3, "feedback_oriented": 0.1,
                          "incentive_open": 0.0}[demand])
            if demand == "rigid_pursuit":
                st.patience -= 0.5
            events.append(("policy_reaction", demand))
        if reading.has("empathy"):
            st.empathy += 1
            if st.empathy <= 2:
                self._change(0.4 if st.empathy == 1 else 0.2)
                events.append(("ack_empathy", None))
            elif st.progress_turn < turn.turn - 1:
                self._hurt(0.2, 0.5)
                events.append(("empty_apology", None))
        if not reading.intents and not turn.voucher_issued and not events:
            self._hurt(0.2, 1.0)
            events.append(("stall_reaction", None))
        elif reading.has("stall") and reading.intents <= {"stall", "closing"}:
            self._hurt(0.2, 1.0)
            events.append(("stall_reaction", None))

        if st.mood > before + 1e-9:
            st.progress_turn = turn.turn
        elif turn.turn >= 6:
            self._hurt(0.1, 0.5)
        return self._conclude(turn, reading, events)

    # ------------------------------------------------------------------ event helpers
    def _on_evidence_request(self) -> tuple[str, str | None]:
        st, order, disclosure = self._st, self._order, self._persona.traits.disclosure
        st.evidence_asks += 1
        if not needs_photo(order.dispute.type):
            self._hurt(0.2, 0.5)
            return ("photo_unneeded", None)
        if st.evidence == "sent":
            self._hurt(0.3, 1.0)
            return ("photo_already", None)
        if st.evidence in ("refused", "unavailable"):
            if st.evidence == "refused" and disclosure == 1:   # reluctant users give in when pressed
                st.evidence = "sent"
                return ("send_photo", "photo")
            self._hurt(0.5, 2.0)
            return ("refuse_photo_again" if st.evidence == "refused" else "no_photo_again", None)
        if not order.evidence.photo:
            st.evidence = "unavailable"
            self._hurt(0.1, 0.0)
            return ("no_photo", None)
        if disclosure == 0 or (disclosure == 1 and self._rng.random() < 0.5):
            st.evidence = "refused"
            self._hurt(0.2, 1.0)
            return ("refuse_photo", None)
        st.evidence = "sent"
        self._change(0.1)
        return ("send_photo", "photo")

    def _on_detail_question(self) -> tuple[str, str | None]:
        st = self._st
        st.details += 1
        if st.details > 2:
            self._hurt(0.2, 1.0)
            return ("nothing_more", None)
        if self._persona.traits.problem_solving <= 1:
            self._hurt(0.15, 0.5)
            return ("answer_detail_hostile", None)
        self._change(0.05)
        return ("answer_detail", None)

    def _change(self, delta: float) -> float:
        """Apply a mood change (module docstring); returns the change actually applied."""
        before = self._st.mood
        if delta < 0:
            self._hurt(-delta, 0.0)
        else:
            jitter = float(self._rng.uniform(0.85, 1.15))
            scale = self._gain * jitter * (0.5 if self._st.trust_broken else 1.0)
            self._st.mood = min(5.0, self._st.mood + delta * scale)
        return self._st.mood - before

    def _hurt(self, mood: float, patience: float) -> None:
        self._st.mood = max(self._floor, self._st.mood - mood * self._sting)
        self._st.patience -= patience

    def _demand_key(self) -> str:
        d = self._persona.demand
        return f"{d.type}/{d.target_remedy}" if d.type == "rigid_pursuit" else d.type

    def _demand_sub(self, explained: bool) -> str:
        d = self._persona.demand.type
        return f"{d}_unexplained" if d == "preference_learning" and not explained else d

    def _met(self) -> bool:
        st, d = self._st, self._persona.demand
        if d.type == "incentive_open":
            return st.voucher_issued or st.refund_promised
        if d.type == "preference_learning":
            return st.options_explained and (st.voucher_issued or st.refund_promised)
        if d.type == "feedback_oriented":
            return st.feedback and st.empathy >= 1
        return st.refund_promised and (d.target_remedy == "item_refund" or st.refund_full)

    # ------------------------------------------------------------------ ending and wording
    def _conclude(self, turn: AgentTurn, reading: Reading, events: list[tuple[str, str | None]]) -> UserReply:
        st = self._st
        st.resolved = self._met()
        done, reason, closing = False, None, None
        if st.patience <= 0:
            st.mood = max(self._floor, st.mood - 0.3)
            done, reason, closing = True, "refused", "give_up"
        elif st.resolved and st.mood >= 3.0:
            done, reason, closing = True, "satisfied", "close_satisfied"
        elif reading.has("closing"):
            if st.resolved:
                done, reason, closing = True, "satisfied", "close_satisfied"
            elif st.patience <= 2 or st.mood < 2.0:
                done, reason, closing = True, "refused", "close_resigned"
            else:
                self._hurt(0.3, 1.0)
                events.insert(0, ("premature_close", None))
        if not done and turn.is_last:
            closing = "close_satisfied" if st.mood >= 3.0 else "out_of_time"
        # A user who closes satisfied keeps only their main reaction (no further demands).
        parts = [self._say(intent, sub) for intent, sub in events[:1 if reason == "satisfied" else 2]]
        if closing is None and not st.resolved and not reading.has("ask_evidence", "ask_detail", "ask_preference",
                                                                    "voucher_offer") and len(parts) < 2:
            parts.append(self._say("nudge", self._demand_key()))
        if closing is not None:
            parts.append(self._say(closing))
        t = self._persona.traits
        if t.affective == 0 and st.mood < 2.0 and self._rng.random() < 0.5:
            parts.append(self._say("outburst"))
        if t.communication.verbosity == 2 and self._rng.random() < 0.3 and not done:
            parts.append(self._say("elaboration"))
        final = done or turn.is_last
        if final:
            self._settle()
        sat = int(min(5, max(1, math.floor(st.mood + 0.5))))
        info = {"evidence_shared": st.evidence == "sent", "resolved": st.resolved,
                "voucher_issued": st.voucher_issued, "refund_promised": st.refund_promised}
        return UserReply(utterance=self._style(parts), satisfaction=sat, done=done, end_reason=reason, info=info)

    def _settle(self) -> None:
        """Promises meet the platform: broken ones cost the user's goodwill (module docstring)."""
        st, order = self._st, self._order
        if st.refund_promised:
            kept = order.fair_remedy.kind == "refund_item" and not st.refund_full and st.evidence == "sent"
            if not kept:  # the refund is declined: its gain is lost, and the broken promise hurts
                st.mood = max(1.0, st.mood - st.refund_gain - 1.0)
        if st.voucher_owed and not st.voucher_issued:
            st.mood = max(1.0, st.mood - 1.0)

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
            sentences = _SENTENCE.split(text)
            text = next((x for x in sentences if "{account}" in x or "{correction}" in x), sentences[0])
        return text.format(**self._fill)

    def _style(self, parts: list[str]) -> str:
        return " ".join(p for p in parts if p)
