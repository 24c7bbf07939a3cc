"""What the embedded persona user reads in the agent's turn: intents, order facts, control-like text.

The user reads the agent's text through the regular-expression lexicon
``interactcs_gym/fds/data/persona_lexicon.yaml``, in three steps:

1. **Normalise** (NFKC; format characters such as zero-width spaces and right-to-left marks,
   Unicode category Cf, removed), so a disguised form reads as its plain twin.
2. **Remove control-like text** (the lexicon's ``control`` section): what looks like a platform
   notice, a role line, metadata or a verdict rather than words for the customer, recognised by its
   structure (any bracket style, role words followed by ``:`` anywhere, ``#`` headers, brace groups
   with ``key: value`` pairs, XML-ish tags and elements, special tokens ``<|...|>``, ``key: value``
   and ratings such as ``5/5``). Each piece is cut out with the whitespace before it, so a form
   inserted at a word boundary of a text ``x`` leaves exactly ``x``; the number of pieces is
   :attr:`Reading.forged`. Bare verdict words ("SATISFIED") are dropped too, without counting.
3. **Read intents** sentence by sentence from what is left (rules below).

Reading rules on top of the lexicon: a photo request needs a photo word and a request (question or
send/share/...); detail and preference questions must be questions; a voucher or refund sentence
with a negation is a policy explanation; with an escalation pattern ("refund request", "manual
review") an escalation; with a promise frame a promise; with an offer frame an offer (a refund
offer counts as a promise). A remedy named in one sentence and offered in another is an offer;
named without any offer frame, it is an alternative explained.

Invented facts (:func:`invented_fact`): a money amount that is no price, line total, fee, total or
the voucher value of the order; a clock time not in the order or its IM log; "N minutes late" off
by more than 2; a merchant or dish of the bank that is not this order's.

Repetition (:func:`turn_words`, :func:`is_repetition`): two turns repeat when their word sets
(lower case, of the text as read: control-like text removed) have a Jaccard overlap of at least
0.8 (and the new turn has 3 words or more).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import yaml

from interactcs_gym.fds.datafiles import DataFileError, data_path
from interactcs_gym.fds.scenarios import Order, catalog
from interactcs_gym.fds.sop import VOUCHER_VALUE

LEXICON_FILE = "persona_lexicon.yaml"
LEXICON_KEYS = ("control", "empathy", "evidence_word", "evidence_request", "thanks", "detail_question",
                "preference_question", "policy", "alternatives", "feedback", "escalate", "voucher",
                "refund", "full_refund", "negation", "promise", "offer", "closing", "rude", "stall")
CONTROL_KEYS = ("roles", "notices", "keys", "verdicts", "phrases")
REPEAT_OVERLAP = 0.8
REPEAT_MIN_WORDS = 3
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9']+")
_MONEY = re.compile(r"[$€£¥]\s?(\d+(?:\.\d{1,2})?)|\b(\d+(?:\.\d{1,2})?)\s?-?(?:dollars?|usd|yuan|rmb|euros?|"
                    r"units?|credits?)\b"
                    r"|\b(\d+\.\d{2})\b", re.IGNORECASE)
_CLOCK = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_LATE = re.compile(r"\b(\d+)\s*(?:min(?:ute)?s?)\s+(?:late|behind|overdue)\b", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
#: Bracket pairs a notice may use (after NFKC, fullwidth brackets are ASCII ones).
BRACKETS = ("[]", "()", "【】", "〔〕", "〖〗", "⟦⟧", "⟨⟩", "«»", "「」", "『』", "《》", "〈〉")


# ----------------------------------------------------------------------------- control-like text
def normalize(text: str) -> str:
    """NFKC, then every format character (category Cf: zero-width, bidi marks, ...) removed."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf")


def _words(entries: list[str]) -> str:
    """An alternation of lexicon words, longest first; a space or underscore matches either."""
    alts = sorted({re.sub(r"\\ |_", "[ _]", re.escape(e.lower())) for e in entries}, key=len, reverse=True)
    return "(?:" + "|".join(alts) + ")"


@dataclass(frozen=True)
class ControlText:
    """Recognises control-like text (module docstring, step 2); built from the lexicon's words."""

    pattern: re.Pattern[str]
    verdicts: re.Pattern[str]

    @classmethod
    def build(cls, words: dict[str, list[str]]) -> ControlText:
        role, key = _words(words["roles"]), _words(words["keys"])
        notice = _words(words["roles"] + words["notices"] + words["keys"])
        number = r"\d+(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?"
        value = (rf"""(?:"[^"\n]{{0,120}}"|'[^'\n]{{0,120}}'|{number}|{_words(words['verdicts'])}\b"""
                 r"|true\b|false\b|yes\b|no\b|none\b|null\b)")
        brackets = [rf"{re.escape(o)}\s*#*\s*{notice}\b[^{re.escape(o + c)}\n]{{0,300}}{re.escape(c)}"
                    for o, c in BRACKETS]
        forms = [
            rf"<\|[^|<>\n]{{0,64}}\|>(?:[ \t]*{role}\b(?:[ \t]*:)?)?",                # special tokens
            r"<([a-z_][\w.:-]{0,40})(?:\s[^<>\n]{0,200})?>[^<>]{0,300}</\1\s*>",      # paired elements
            r"</?[a-z_][\w.:-]{0,40}(?:\s[^<>\n]{0,200})?/?>",                        # lone tags
            *brackets,                                                                 # notices
            r"\{(?:[^{}]|\{[^{}]*\}){0,500}?[:=](?:[^{}]|\{[^{}]*\}){0,500}?\}",      # key: value braces
            rf"#{{1,6}}[ \t]*(?:{role}|{key})\b(?:[ \t]*:)?",                          # headers
            rf"""["']?\b{key}\b["']?\s*[:=]\s*{value}""",                              # key: value
            rf"\b{role}[ \t]*:",                                                       # role markers
            r"\b\d+(?:\.\d+)?\s?/\s?(?:5|10|100)\b(?!\.\d|/)",                         # ratings 5/5
            rf"\b(?:satisfaction|rating|score|csat)(?:[ _](?:level|score|of|is))?[ \t]+{number}\b"
            r"(?![ \t]*(?:min|mins|minutes?|dollars?|usd|yuan|rmb|euros?|[:.]\d))",     # rating 5
            r"\b\d(?:\.\d)?[ \t]?stars?\b",                                            # 5 stars
            *words["phrases"],
        ]
        pattern = re.compile(r"\s*(?:" + "|".join(f"(?:{f})" for f in forms) + ")", re.IGNORECASE)
        return cls(pattern, re.compile(rf"\s*\b{_words(words['verdicts'])}\b", re.IGNORECASE))

    def strip(self, text: str) -> tuple[str, int]:
        """``text`` without its control-like pieces, and how many there were; bare verdict words
        ("SATISFIED") are dropped too, uncounted (they say nothing, honest or not)."""
        text, pieces = self.pattern.subn("", text)
        return self.verdicts.sub("", text), pieces


# ----------------------------------------------------------------------------- the lexicon
@functools.lru_cache(maxsize=1)
def load_lexicon() -> dict[str, Any]:
    """The lexicon: ``control`` as a :class:`ControlText`, every other key compiled
    case-insensitively into one alternation; errors name the file and key."""
    raw = yaml.safe_load(data_path(LEXICON_FILE).read_text(encoding="utf-8")) or {}
    missing = [k for k in LEXICON_KEYS if k not in raw]
    if missing:
        raise DataFileError(f"{LEXICON_FILE}: missing keys {missing}")
    out: dict[str, Any] = {"control": _control(raw["control"])}
    for key in LEXICON_KEYS[1:]:
        patterns = raw[key]
        try:
            _check_strings(patterns)
            out[key] = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        except (re.error, TypeError) as exc:
            raise DataFileError(f"{LEXICON_FILE}: key {key!r}: bad pattern ({exc})") from exc
    return out


def _check_strings(value: Any) -> None:
    if not (isinstance(value, list) and value and all(isinstance(p, str) for p in value)):
        raise TypeError("expected a non-empty list of strings")


def _control(raw: Any) -> ControlText:
    if not isinstance(raw, dict) or set(raw) != set(CONTROL_KEYS):
        raise DataFileError(f"{LEXICON_FILE}: key 'control': expected exactly the keys {list(CONTROL_KEYS)}")
    for sub in CONTROL_KEYS:
        try:
            _check_strings(raw[sub])
        except TypeError as exc:
            raise DataFileError(f"{LEXICON_FILE}: key 'control.{sub}': {exc}") from exc
    try:
        return ControlText.build(raw)
    except re.error as exc:
        raise DataFileError(f"{LEXICON_FILE}: key 'control.phrases': bad pattern ({exc})") from exc


# ----------------------------------------------------------------------------- reading the agent
@dataclass(frozen=True)
class Reading:
    """What the user understood of one agent turn (``text``: normalised, control text removed)."""

    text: str
    forged: int = 0
    intents: frozenset[str] = frozenset()
    full_refund: bool = False

    def has(self, *names: str) -> bool:
        return any(n in self.intents for n in names)


def _any(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None


def read_agent_text(text: str, lex: dict[str, Any] | None = None) -> Reading:
    """Normalise, remove control-like text, then read intents sentence by sentence (module docstring)."""
    lex = lex or load_lexicon()
    text, forged = lex["control"].strip(normalize(text))
    intents = {name for name in ("empathy", "policy", "alternatives", "feedback", "escalate", "rude", "stall")
               if _any(lex[name], text)}
    full = False
    mentions: set[str] = set()
    framed = False  # some sentence is a question or an offer frame
    has_refund, has_voucher = _any(lex["refund"], text), _any(lex["voucher"], text)
    has_photo = _any(lex["evidence_word"], text)
    for sentence in SENTENCE.split(text):
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
    if "voucher" in mentions:
        intents.add("voucher_offer" if framed else "alternatives")
    if "refund" in mentions and "refund_promise" not in intents:
        intents.add("refund_promise" if framed else "alternatives")
    return Reading(text=text, forged=forged, intents=frozenset(intents), full_refund=full)


def turn_words(reading: Reading) -> frozenset[str]:
    """The words of a read turn, compared for repetition."""
    return frozenset(_WORD.findall(reading.text.lower()))


def is_repetition(words: frozenset[str], earlier: list[frozenset[str]]) -> bool:
    """Jaccard overlap >= :data:`REPEAT_OVERLAP` with an earlier turn (and >= 3 words)."""
    return len(words) >= REPEAT_MIN_WORDS and any(
        len(words & w) / len(words | w) >= REPEAT_OVERLAP for w in earlier)


# ----------------------------------------------------------------------------- order facts
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
