"""Text helpers shared by the judges: the agent protocol, lexicons, order facts, transcripts.

Everything here reads a dialogue in chat format (``[{"role", "content"}, ...]``, system prompt
first, agent turns as raw ``<think>…</think><response>…</response><action>A</action>`` text) and a
scenario dict (the order facts the agent was given; any nesting of dicts, lists, strings, numbers).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S | re.I) for name in ("think", "response", "action")}
_OPEN_RESPONSE = re.compile(r"<response>(.*)", re.S | re.I)
_ANY_TAG = re.compile(r"</?\s*(think|response|action)\s*>", re.I)
ACTIONS = ("chat", "voucher")


@dataclass
class AgentTurn:
    """One agent turn, parsed. ``action`` is None when the turn broke the protocol;
    ``requested_action`` is what its action tag named (chat/voucher) even then."""

    index: int          # position in the messages list
    raw: str
    think: str | None
    response: str
    action: str | None
    format_ok: bool
    requested_action: str | None = None


def parse_agent_turn(raw: str, index: int = -1) -> AgentTurn:
    """Parse ``<think>..</think><response>..</response><action>A</action>``; best effort when malformed.

    Well formed: exactly one of each tag, in that order, nothing but whitespace around them, and
    ``A`` in {chat, voucher}. A malformed turn keeps whatever response text can be recovered (the
    ``<response>`` body, an unclosed ``<response>`` tail, or the text with the tags stripped).
    """
    found = {name: pat.findall(raw) for name, pat in _TAG.items()}
    think = found["think"][0].strip() if found["think"] else None
    action_text = found["action"][0].strip().lower() if found["action"] else None
    action = action_text if action_text in ACTIONS else None
    canonical = re.fullmatch(r"\s*<think>.*?</think>\s*<response>.*?</response>\s*<action>.*?</action>\s*",
                             raw, re.S | re.I)
    format_ok = bool(canonical) and all(len(v) == 1 for v in found.values()) and action is not None
    if found["response"]:
        response = found["response"][0].strip()
    elif (tail := _OPEN_RESPONSE.search(raw)) is not None:
        response = _ANY_TAG.sub(" ", tail.group(1)).strip()
    else:
        response = _ANY_TAG.sub(" ", _TAG["think"].sub(" ", raw)).strip()
    return AgentTurn(index, raw, think, response, action if format_ok else None, format_ok, action)


def agent_turns(messages: list[dict[str, str]]) -> list[AgentTurn]:
    """The parsed assistant turns of a dialogue, in order."""
    return [parse_agent_turn(m["content"], i) for i, m in enumerate(messages) if m.get("role") == "assistant"]


def previous_user_message(messages: list[dict[str, str]], index: int) -> str:
    """The last user message before position ``index`` ("" if none)."""
    for m in reversed(messages[:index]):
        if m.get("role") == "user":
            return m.get("content", "")
    return ""


def transcript(messages: list[dict[str, str]], *, include_system: bool = False) -> str:
    """The dialogue as ``[role] text`` lines; agent turns show their response text and action."""
    lines = []
    for m in messages:
        role = m.get("role")
        if role == "system" and not include_system:
            continue
        if role == "assistant":
            turn = parse_agent_turn(m["content"])
            lines.append(f"[agent] {turn.response} (action: {turn.action or 'malformed'})")
        else:
            lines.append(f"[{role}] {m.get('content', '')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- lexicons
@functools.lru_cache(maxsize=1)
def lexicons() -> dict[str, Any]:
    """The judges' lexicons (``judges/data/lexicons.yaml``), patterns compiled."""
    text = resources.files("interactcs_gym.judges").joinpath("data/lexicons.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    out: dict[str, Any] = {}
    for key, entries in data.items():
        if key.endswith("_patterns"):
            out[key] = [re.compile(p, re.I) for p in entries]
        else:
            out[key] = [str(e).lower() for e in entries]
    return out


def has_any(text: str, lexicon: str) -> bool:
    """Whether ``text`` contains an entry of the named lexicon (case-insensitive substring)."""
    low = text.lower()
    return any(entry in low for entry in lexicons()[lexicon])


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?。！？])\s*|\n+", text) if s.strip()]


def promises_refund(text: str) -> bool:
    """A sentence that commits to a refund (pattern match) and holds no negation."""
    lex = lexicons()
    for sentence in sentences(text):
        if any(p.search(sentence) for p in lex["refund_promise_patterns"]) and \
                not any(p.search(sentence) for p in lex["negation_patterns"]):
            return True
    return False


def asks_question(text: str) -> bool:
    return "?" in text or "？" in text


# ---------------------------------------------------------------------- order facts
_MONEY = re.compile(r"(?:[$¥€£]|\brmb\s?|\byuan\s?|\busd\s?|\beur\s?)(\d+(?:[.,]\d{1,2})?)"
                    r"|(\d+(?:[.,]\d{1,2})?)\s?(?:yuan|rmb|dollars?|usd|eur|euros?|元)\b", re.I)
_CLOCK = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_LONG_NUMBER = re.compile(r"\b\d{5,}\b")
_WORD = re.compile(r"[a-z0-9']+|[\u4e00-\u9fff]", re.I)


def flatten(value: Any) -> list[str]:
    """Every scalar of a nested scenario, as text."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *flatten(v)]]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in flatten(v)]
    return [] if value is None else [str(value)]


def known_facts(scenario: dict[str, Any], messages: list[dict[str, str]] | None = None) -> str:
    """What the agent was given: the scenario's scalars and the system prompt, as one text."""
    parts = flatten(scenario)
    if messages and messages[0].get("role") == "system":
        parts.append(messages[0].get("content", ""))
    return "\n".join(parts)


def invented_facts(response: str, known: str) -> list[str]:
    """Amounts, clock times and long numbers (order ids) in ``response`` absent from ``known``.

    ``known`` is :func:`known_facts`; when it is empty nothing can be checked and nothing is
    reported. Amounts compare as numbers rounded to cents (``12.5`` matches ``12.50``).
    """
    if not known.strip():
        return []
    numbers = {round(float(x), 2) for x in re.findall(r"\d+(?:\.\d+)?", known)}
    out = []
    for m in _MONEY.finditer(response):
        value = round(float((m.group(1) or m.group(2)).replace(",", ".")), 2)
        if value not in numbers:
            out.append(m.group(0).strip())
    for m in _CLOCK.finditer(response):
        if m.group(0) not in known and f"{int(m.group(1)):02d}:{m.group(2)}" not in known:
            out.append(m.group(0))
    out.extend(n for n in _LONG_NUMBER.findall(response) if n not in known)
    return out


def responsible_party(scenario: dict[str, Any]) -> str | None:
    """The party the scenario holds responsible (a key containing "responsib"), lower case."""
    for key, value in _walk(scenario):
        if "responsib" in key.lower() and isinstance(value, str):
            return value.lower()
    return None


def refund_allowed(scenario: dict[str, Any], response: str = "", sop: dict[str, Any] | None = None) -> bool:
    """Whether a refund promise in ``response`` is within policy: the fair remedy is a refund (the
    env's SOP decision ``sop["remedy"]``; without one, a remedy field of the scenario, a key
    containing "remedy", mentions a refund), and the promise is not a full refund."""
    if any(p.search(response) for p in lexicons()["full_refund_patterns"]):
        return False
    if sop and sop.get("remedy") is not None:
        return "refund" in str(sop["remedy"]).lower()
    return any("remedy" in key.lower() and "refund" in " ".join(flatten(value)).lower()
               for key, value in _walk(scenario))


def _walk(value: Any, key: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k), v
            yield from _walk(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v, key)


# ---------------------------------------------------------------------- similarity
STOPWORDS = frozenset("""a an the and or but if to of in on at for with from by is are was were be been
i you we they he she it my your our their me us them this that these those please thank thanks
sorry so very can could would will just not no yes do does did have has had as about""".split())


def content_words(text: str) -> set[str]:
    """Lower-case words of 4+ letters (or CJK characters) that are not stop words."""
    return {w for w in (t.lower() for t in _WORD.findall(text))
            if (len(w) >= 4 or "\u4e00" <= w <= "\u9fff") and w not in STOPWORDS}


def jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| of the two texts' word sets (0 when both are empty)."""
    wa = {t.lower() for t in _WORD.findall(a)}
    wb = {t.lower() for t in _WORD.findall(b)}
    union = wa | wb
    return len(wa & wb) / len(union) if union else 0.0


def word_count(text: str) -> float:
    """Latin words plus half the CJK characters (a rough length in words)."""
    tokens = _WORD.findall(text)
    cjk = sum(1 for t in tokens if "\u4e00" <= t <= "\u9fff")
    return (len(tokens) - cjk) + cjk / 2


def is_cjk(text: str) -> bool:
    """Whether most letters of ``text`` are CJK characters."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    return cjk > latin
