"""The FDS agent protocol (SPEC 4.3): ``<think>…</think><response>…</response><action>A</action>``.

A turn is *well formed* when it is exactly three blocks, in this order, with only whitespace around
them: ``<think>`` (the agent's reasoning, never shown to the user; may be empty), ``<response>``
(what the user reads; not empty) and ``<action>`` holding exactly ``chat`` or ``voucher``
(surrounding whitespace ignored). Tags are lowercase, not nested, each used once; chat-template
control tokens (``<|im_end|>`` ...) are not allowed anywhere.

:func:`parse_turn` never raises and runs in linear time (a 1 MB turn parses in milliseconds). For
a malformed turn it still extracts, best effort, the text the user should receive: the content of
the first ``<response>`` block up to the next tag (or the end of the text), or else the whole text
with ``<think>``/``<action>`` blocks and stray tags removed. Each problem is described in
:attr:`ParsedTurn.errors` in words an agent can learn from.

Plain text that merely *looks* official ("satisfaction: 5", "[System: voucher issued]", "User:")
is not a protocol violation; it reaches the user as text and has no power over the env.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTIONS = ("chat", "voucher")
BLOCKS = ("think", "response", "action")
PROTOCOL_HINT = ("Write every turn as <think>your reasoning</think><response>what the user reads"
                 "</response><action>chat</action>, or <action>voucher</action> to issue the voucher.")

_TAG = re.compile(r"<\s*(/?)\s*(think|response|action)\s*>", re.IGNORECASE)
_CONTROL = re.compile(r"<\|[^<>|]{0,64}\|>")
_SHOW = 40
_MAX_ERRORS = 5


@dataclass(frozen=True)
class ParsedTurn:
    """One parsed agent turn.

    ``response``: the text the user receives (best effort when malformed). ``action``: ``"chat"`` or
    ``"voucher"`` when the action block names one (even in an otherwise malformed turn), else
    ``None``. ``ok``: the turn is well formed. ``errors``: what is wrong, one sentence each.
    """

    think: str | None
    response: str
    action: str | None
    ok: bool
    errors: tuple[str, ...] = ()

    @property
    def voucher_requested(self) -> bool:
        """A clean voucher request: a well-formed turn whose action is ``voucher``."""
        return self.ok and self.action == "voucher"

    @property
    def error(self) -> str | None:
        """All errors as one message, or ``None`` for a well-formed turn."""
        if self.ok:
            return None
        return "Your turn broke the protocol: " + " ".join(self.errors) + " " + PROTOCOL_HINT


def _show(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def _block_text(text: str, tags: list[re.Match[str]], name: str) -> str | None:
    """Content of the first ``<name>`` block: up to its closing tag, else the next tag, else the end."""
    for k, m in enumerate(tags):
        if not m.group(1) and m.group(2).lower() == name:
            end = tags[k + 1].start() if k + 1 < len(tags) else len(text)
            return text[m.end():end]
    return None


def _structure_errors(text: str, tags: list[re.Match[str]]) -> list[str]:
    errors: list[str] = []
    if any(m.group(0) != f"<{m.group(1)}{m.group(2).lower()}>" for m in tags):
        errors.append("Tags must be written exactly as <think>, </think>, <response>, </response>, "
                      "<action>, </action> (lowercase, no spaces).")
    stack: list[str] = []           # open blocks, outermost first
    counts = dict.fromkeys(BLOCKS, 0)  # top-level blocks
    seen: set[str] = set()
    order: list[str] = []
    outside: list[str] = []
    last_end = 0
    for m in tags:
        closing, name = bool(m.group(1)), m.group(2).lower()
        seen.add(name)
        if not closing:
            if stack:
                errors.append(f"<{name}> is nested inside <{stack[-1]}>; close </{stack[-1]}> before "
                              f"opening <{name}>.")
            else:
                outside.append(text[last_end:m.start()])
                counts[name] += 1
                order.append(name)
            stack.append(name)
        elif name in stack:
            idx = len(stack) - 1 - stack[::-1].index(name)
            errors.extend(f"<{inner}> is never closed; add </{inner}>." for inner in stack[idx + 1:])
            del stack[idx:]
            if not stack:
                last_end = m.end()
        else:
            errors.append(f"</{name}> has no matching <{name}>.")
            if not stack:
                outside.append(text[last_end:m.start()])
                last_end = m.end()
    errors.extend(f"<{name}> is never closed; add </{name}>." for name in stack)
    if not stack:
        outside.append(text[last_end:])
    for name in BLOCKS:
        if name not in seen:
            errors.append(f"The <{name}>...</{name}> block is missing.")
        elif counts[name] > 1:
            errors.append(f"There is more than one <{name}> block; use each block once.")
    if len(set(order)) == len(order) == 3 and order != list(BLOCKS):
        errors.append("The blocks are out of order; write <think>, then <response>, then <action>.")
    stray = "".join(outside).strip()
    if stray:
        errors.append(f"There is text outside the blocks ({_show(stray)}); put everything the user "
                      "should read inside <response>...</response>.")
    return errors


def _dedupe(errors: list[str], limit: int = _MAX_ERRORS) -> tuple[str, ...]:
    """Distinct errors in order of appearance, at most ``limit`` (then a count of the rest)."""
    distinct = list(dict.fromkeys(errors))
    if len(distinct) <= limit:
        return tuple(distinct)
    return (*distinct[:limit], f"(and {len(distinct) - limit} more problems)")


def _best_effort_response(text: str, tags: list[re.Match[str]]) -> str:
    inside = _block_text(text, tags, "response")
    if inside is not None:
        return inside
    # No <response>: drop <think>/<action> blocks (up to their closing tag or the next tag) and tags.
    kept: list[str] = []
    pos, skipping = 0, False
    for m in tags:
        if not skipping:
            kept.append(text[pos:m.start()])
        skipping = not m.group(1) and m.group(2).lower() in ("think", "action")
        pos = m.end()
    if not skipping:
        kept.append(text[pos:])
    return "".join(kept)


def parse_turn(text: str) -> ParsedTurn:
    """Parse one agent turn (never raises; see the module docstring for the rules).

    >>> t = parse_turn("<think>ask first</think><response>Could you send a photo?</response><action>chat</action>")
    >>> (t.ok, t.action, t.response)
    (True, 'chat', 'Could you send a photo?')
    >>> parse_turn("Sure, refunded!").errors[0]
    'The <think>...</think> block is missing.'
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_turn expects a str, got {type(text).__name__}")
    tags = list(_TAG.finditer(text))
    errors = _structure_errors(text, tags)
    if _CONTROL.search(text):
        errors.append("The turn contains chat-template control tokens such as <|im_end|>; write "
                      "plain text only.")
    think = _block_text(text, tags, "think")
    response = _CONTROL.sub("", _best_effort_response(text, tags)).strip()
    raw_action = _block_text(text, tags, "action")
    action = raw_action.strip() if raw_action is not None and raw_action.strip() in ACTIONS else None
    if raw_action is not None and action is None:
        errors.append(f"Unknown action {_show(raw_action)}: the action must be exactly chat or voucher.")
    if not response and not any("<response>" in e for e in errors):
        errors.append("The response is empty; write what the user should read inside "
                      "<response>...</response>.")
    return ParsedTurn(think=None if think is None else think.strip(), response=response,
                      action=action, ok=not errors, errors=_dedupe(errors))
