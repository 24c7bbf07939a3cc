"""Bounded JSON parsing for text nobody vouches for: agent turns, simulator and judge replies.

Python's ``json`` module recurses once per nesting level, so a few KB of ``[[[[...`` raise
``RecursionError``, and it reads ``Infinity``, ``NaN`` and ``1e400`` (which overflows to ``inf``)
as floats that later raise ``OverflowError`` in ``int()``. Every parse of untrusted JSON in the
suite goes through this module instead, which bounds the input before the decoder sees it:

* **depth**: the nesting depth (objects and arrays, counted outside strings) is at most
  :data:`MAX_DEPTH` (64), checked by a linear scan before decoding;
* **size**: the text (or, for :func:`json_objects`, the part of it searched) is at most
  :data:`MAX_CHARS` (65,536) characters;
* **numbers**: every number is finite (``NaN``, ``Infinity`` and overflowing literals are
  rejected) and an integer literal has at most 4,300 digits (Python's own limit).

Anything outside the bounds is an :class:`UntrustedJSONError`, a ``ValueError`` whose message
says which bound was crossed, so callers that already handle malformed JSON need nothing new.
Nothing here raises anything else, whatever the text.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64
MAX_CHARS = 65_536


class UntrustedJSONError(ValueError):
    """Untrusted text is not JSON within the bounds (the message says why)."""


def _reject_constant(name: str) -> float:
    raise UntrustedJSONError(f"non-finite number {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UntrustedJSONError(f"number {text[:40]} is out of range")
    return value


#: A whole JSON string (or an unterminated one up to the end), or one bracket.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[][{}]', re.DOTALL)
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def nesting_depth(text: str, start: int = 0, *, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of the JSON value at ``text[start:]``, scanning only as far as it goes.

    Brackets inside strings do not count. The scan stops when the value closes, or as soon as the
    depth exceeds ``limit`` (it then returns ``limit + 1``), so it is linear in the value's length.

    >>> nesting_depth('{"a": [1, {"b": "]]"}]} trailing')
    3
    >>> nesting_depth("[" * 100, limit=64)
    65
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(text, start):
        ch = match.group()
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
            if depth <= 0:
                return deepest
    return deepest


def loads(text: str, *, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS) -> Any:
    """``json.loads`` within the bounds; :class:`UntrustedJSONError` (a ValueError) otherwise.

    >>> loads('{"satisfaction": 4}')
    {'satisfaction': 4}
    >>> try:
    ...     loads('{"satisfaction": 1e400}')
    ... except UntrustedJSONError as exc:
    ...     print(exc)
    number 1e400 is out of range
    """
    if not isinstance(text, str):
        raise UntrustedJSONError(f"expected a JSON string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise UntrustedJSONError(f"JSON text is longer than {max_chars} characters")
    start = len(text) - len(text.lstrip())
    value, end = _decode(text, start, max_depth)
    if text[end:].strip():
        raise UntrustedJSONError(f"extra data after the JSON value at character {end}")
    return value


def json_objects(text: str, *, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS) -> list[dict[str, Any]]:
    """The top-level JSON objects in ``text``, in order; code fences and chatter are skipped.

    Only the first ``max_chars`` characters are searched; an object nested deeper than
    ``max_depth``, or holding a non-finite number, is skipped like any malformed one.
    Never raises.

    >>> json_objects('Reasoning... {"score": 1} and ```json\\n{"end": "satisfied"}\\n```')
    [{'score': 1}, {'end': 'satisfied'}]
    """
    if not isinstance(text, str):
        return []
    text = text[:max_chars]
    out: list[dict[str, Any]] = []
    pos = 0
    while (start := text.find("{", pos)) != -1:
        try:
            obj, end = _decode(text, start, max_depth)
        except UntrustedJSONError:
            pos = start + 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        pos = end
    return out


def _decode(text: str, start: int, max_depth: int) -> tuple[Any, int]:
    """One JSON value at ``text[start:]`` and where it ends; every failure is an UntrustedJSONError."""
    if nesting_depth(text, start, limit=max_depth) > max_depth:
        raise UntrustedJSONError(f"JSON nested deeper than {max_depth} levels")
    try:
        return _DECODER.raw_decode(text, start)
    except UntrustedJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise UntrustedJSONError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. an int of > 4300 digits
        raise UntrustedJSONError(f"not usable JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
