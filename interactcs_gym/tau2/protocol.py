"""The agent's action protocol on the τ² envs: a tool call in JSON, or plain text to the user.

An action (one ``str``) is read as:

* **a tool call**: the whole action is a JSON object ``{"name": "<tool>", "arguments": {...}}``
  (optionally inside a ```` ```json ```` fence), a JSON list of such objects (several calls at
  once), or one or more Hermes/Qwen-style ``<tool_call>{...}</tool_call>`` blocks;
* **a message to the user**: anything else;
* **the stop signal**: a message containing ``###STOP###`` or a call of the ``done`` tool.

A leading ``<think>…</think>`` block (reasoning models) is dropped before the action is read: the
user never sees it. This module is pure Python (no τ²-bench import), so it is tested everywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from interactcs_gym.core import untrusted

STOP_TOKEN = "###STOP###"
STOP_TOOL = "done"

_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)
_TOOL_CALL_TAG = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@dataclass
class ToolCallRequest:
    """One tool call as the agent wrote it (arguments not yet checked against the tool)."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ParsedAction:
    """What an action says: text for the user, tool calls, or why it could not be read."""

    text: str | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    stop: bool = False
    error: str | None = None

    @property
    def is_tool_call(self) -> bool:
        return bool(self.tool_calls)


def strip_think(action: str) -> str:
    """Drop one leading ``<think>…</think>`` block."""
    return _THINK.sub("", action, count=1)


def parse_action(action: str) -> ParsedAction:
    """Read one agent action; never raises (a malformed tool call comes back with ``error``)."""
    body = strip_think(action).strip()
    if not body:
        return ParsedAction(error="Your turn was empty. Write a message to the user, or a tool "
                                  'call as JSON: {"name": "<tool>", "arguments": {...}}.')
    tagged = _TOOL_CALL_TAG.findall(body)
    if tagged:
        calls, error = _read_calls([t.strip() for t in tagged])
        outside = _TOOL_CALL_TAG.sub("", body).strip()
        return _finish(ParsedAction(text=outside or None, tool_calls=calls, error=error))
    fenced = _FENCE.match(body)
    candidate = fenced.group(1).strip() if fenced else body
    if candidate.startswith(("{", "[")) or fenced:
        calls, error = _read_calls([candidate])
        return _finish(ParsedAction(tool_calls=calls, error=error))
    return ParsedAction(text=body, stop=STOP_TOKEN in body)


def _finish(parsed: ParsedAction) -> ParsedAction:
    if parsed.error is not None:
        parsed.tool_calls = []
        return parsed
    if any(call.name == STOP_TOOL for call in parsed.tool_calls):
        if len(parsed.tool_calls) > 1:
            parsed.tool_calls = []
            parsed.error = f"Call `{STOP_TOOL}` alone: it ends the conversation."
            return parsed
        return ParsedAction(text=STOP_TOKEN, stop=True)
    return parsed


def _read_calls(chunks: list[str]) -> tuple[list[ToolCallRequest], str | None]:
    calls: list[ToolCallRequest] = []
    for chunk in chunks:
        try:
            payload = untrusted.loads(chunk)
        except untrusted.UntrustedJSONError as exc:
            reason = str(exc) if str(exc).startswith("not ") else f"not readable: {exc}"
            return [], (f"Your tool call is {reason}. Write exactly one JSON object: "
                        '{"name": "<tool>", "arguments": {...}}, or a JSON list of them.')
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            return [], "Your tool call is an empty list: give at least one call."
        for item in items:
            call, error = _read_call(item)
            if error is not None:
                return [], error
            calls.append(call)
    return calls, None


def _read_call(item: Any) -> tuple[ToolCallRequest | None, str | None]:
    if isinstance(item, dict) and isinstance(item.get("function"), dict):
        item = item["function"]  # OpenAI's {"type": "function", "function": {...}} wrapper
    if not isinstance(item, dict):
        return None, (f"A tool call must be a JSON object with keys \"name\" and "
                      f"\"arguments\", got {type(item).__name__}.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return None, 'A tool call needs a "name": the tool to call, as a string.'
    unknown = set(item) - {"name", "arguments", "id", "type"}
    if unknown:
        return None, (f"Tool call `{name}` has unexpected keys {sorted(unknown)}: put the tool's "
                      f'parameters inside "arguments".')
    arguments = item.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI's API sends arguments as a JSON string
        try:
            arguments = untrusted.loads(arguments) if arguments.strip() else {}
        except untrusted.UntrustedJSONError:
            return None, f'The "arguments" of `{name}` is a string that is not valid JSON.'
    if not isinstance(arguments, dict):
        return None, (f'The "arguments" of `{name}` must be a JSON object mapping parameter names '
                      f"to values, got {type(arguments).__name__}.")
    return ToolCallRequest(name=name, arguments=arguments), None


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical text of a tool call action (what an agent should write)."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def check_arguments(tool: Any, arguments: dict[str, Any]) -> str | None:
    """Check ``arguments`` against a τ² ``Tool``'s parameter model; the problem in words, or None.

    Validation is pydantic's strict JSON mode: values must already have the JSON type the schema
    asks for (``"5"`` is not an integer, ``5`` is a valid float); enums and nested objects are
    given as JSON. Unknown parameters are refused. The arguments themselves are passed on unchanged,
    exactly as the official τ²-bench runner would pass them.
    """
    from pydantic import ValidationError  # pydantic is a core dependency; imported here for speed

    params = tool.params
    known = set(params.model_fields)
    extra = sorted(set(arguments) - known)
    if extra:
        return (f"`{tool.name}` has no parameter(s) {extra}; its parameters are "
                f"{sorted(known) or 'none'}.")
    try:
        params.model_validate_json(json.dumps(arguments), strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
            for err in exc.errors(include_url=False))
        return f"Wrong arguments for `{tool.name}`: {problems}."
    except (TypeError, ValueError) as exc:  # arguments that JSON cannot encode
        return f"Wrong arguments for `{tool.name}`: {exc}."
    return None
