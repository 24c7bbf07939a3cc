"""Simulated users for the τ² envs, as τ²-bench ``BaseUser`` implementations.

* :class:`LLMUser`: the official τ²-bench user simulator (its system prompt: the simulation
  guidelines and the task's user scenario; its stop tokens ``###STOP###``, ``###TRANSFER###``,
  ``###OUT-OF-SCOPE###``) with the LLM call going through one of the project's chat back-ends
  (:mod:`interactcs_gym.llm`: any OpenAI-compatible endpoint such as a local ``vllm serve`` or
  ``transformers serve``) instead of LiteLLM. Chat back-ends exchange text, so the user's device
  tools (telecom) are offered in the prompt and called with the same JSON protocol as the agent's.
* :class:`ScriptedUser`: replies from a fixed script, offline and deterministic (tests, smoke
  runs, replaying gold trajectories).

This module imports τ²-bench; the env imports it only after :func:`~.official.require_tau2`.
"""

from __future__ import annotations

import json
from typing import Any

from tau2.data_model.message import MultiToolMessage, SystemMessage, ToolCall, UserMessage
from tau2.user.base import STOP, BaseUser, UserState, is_valid_user_history_message
from tau2.user.user_simulator import UserSimulator

from interactcs_gym.tau2.protocol import format_tool_call, parse_action, strip_think

#: Script item: text to the agent, one tool call ``{"name", "arguments"}``, or a list of calls.
ScriptItem = str | dict[str, Any] | list[dict[str, Any]]


class UserSimulatorError(RuntimeError):
    """The simulated user could not produce a valid message (after its bounded retries)."""


def _append(state: UserState, message: Any) -> None:
    if isinstance(message, MultiToolMessage):
        state.messages.extend(message.tool_messages)
    else:
        state.messages.append(message)


def opening_line(instructions: Any) -> str:
    """What a scripted user says first when no script is given: the task's reason for calling."""
    reason = getattr(instructions, "reason_for_call", None)
    return str(reason if reason else instructions).strip()


class ScriptedUser(BaseUser):
    """A user that says the items of ``script`` in order, then ``###STOP###``.

    Each time the user is asked for a message, the next item is used: a string is said to the agent;
    a tool call ``{"name": ..., "arguments": {...}}`` (or a list of them) runs on the user's own
    tools (telecom's phone), after which the user is asked again. When the script is exhausted the
    user ends the conversation with ``###STOP###``. Without a script the user opens with the task's
    reason for calling and stops at its next turn.
    """

    def __init__(self, script: list[ScriptItem] | None = None, instructions: Any = None) -> None:
        super().__init__(instructions=instructions)
        self.script = list(script) if script is not None else [opening_line(instructions)]
        self._cursor = self._calls = 0

    def get_init_state(self, message_history: list[Any] | None = None) -> UserState:
        history = [m for m in (message_history or []) if is_valid_user_history_message(m)]
        self._cursor = self._calls = 0
        return UserState(system_messages=[], messages=history)

    @classmethod
    def is_stop(cls, message: UserMessage) -> bool:
        return UserSimulator.is_stop(message)

    def set_seed(self, seed: int) -> None:
        """A script has no randomness."""

    def generate_next_message(self, message: Any, state: UserState
                              ) -> tuple[UserMessage, UserState]:
        _append(state, message)
        item: ScriptItem = self.script[self._cursor] if self._cursor < len(self.script) else STOP
        self._cursor += 1
        if isinstance(item, str):
            reply = UserMessage(role="user", content=item)
        else:
            calls = item if isinstance(item, list) else [item]
            reply = UserMessage(role="user", tool_calls=[self._tool_call(c) for c in calls])
        state.messages.append(reply)
        return reply, state

    def _tool_call(self, call: dict[str, Any]) -> ToolCall:
        self._calls += 1
        return ToolCall(id=f"user_call_{self._calls}", name=call["name"],
                        arguments=dict(call.get("arguments", {})), requestor="user")


TOOL_PROTOCOL = """
## Using your tools in this conversation
The tools below act on your own side (for example your phone). To use one, reply with only a JSON
object and nothing else: {{"name": "<tool name>", "arguments": {{...}}}}. Its result comes back to
you as a message starting with "[tool result]"; the agent does not see your tool calls or their
results. One tool call per message.

Your tools (JSON schemas):
{schemas}
""".rstrip()

TOOL_RESULT_PREFIX = "[tool result]"


class LLMUser(UserSimulator):
    """The official τ²-bench user simulator, generating through a project chat back-end.

    ``backend``: an :class:`interactcs_gym.llm.ChatBackend`. ``sampling``: keyword arguments of
    every ``chat`` call, over τ²-bench's default ``{"temperature": 0.0}``; the episode seed is
    added as ``seed`` unless ``seed_requests=False``. A reply that is empty or a malformed tool
    call is asked for again, at most ``max_reasks`` times (with a note saying what was wrong),
    then :class:`UserSimulatorError`. (The keyword names are those of the FDS LLM simulator.)
    """

    def __init__(self, backend: Any, *, tools: list[Any] | None = None, instructions: Any = None,
                 sampling: dict[str, Any] | None = None, max_reasks: int = 2,
                 seed_requests: bool = True) -> None:
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        super().__init__(tools=tools, instructions=instructions, llm="interactcs-chat-backend",
                         llm_args={"temperature": 0.0, **(sampling or {})})
        self.backend = backend
        self.max_reasks = int(max_reasks)
        self.seed_requests = bool(seed_requests)
        self._tool_names = {t.name for t in tools or []}
        self._calls = 0

    @property
    def system_prompt(self) -> str:
        prompt = super().system_prompt
        if self.tools:
            schemas = "\n".join(json.dumps(t.openai_schema["function"], ensure_ascii=False)
                                for t in self.tools)
            prompt += "\n" + TOOL_PROTOCOL.format(schemas=schemas)
        return prompt

    def _generate_next_message(self, message: Any, state: UserState
                               ) -> tuple[UserMessage, UserState]:
        _append(state, message)
        chat = to_chat(state.system_messages + state.flip_roles())
        problem = None
        for _ in range(self.max_reasks + 1):
            attempt = chat if problem is None else chat + [{"role": "user", "content": problem}]
            reply = self.backend.chat(attempt, **self.llm_args)
            user_message, problem = self._read(reply)
            if user_message is not None:
                state.messages.append(user_message)
                return user_message, state
        raise UserSimulatorError(f"the simulated user gave no valid message in "
                                 f"{self.max_reasks + 1} tries; last problem: {problem}")

    def set_seed(self, seed: int) -> None:
        if self.seed_requests:
            self.llm_args["seed"] = int(seed)

    def _read(self, reply: str) -> tuple[UserMessage | None, str | None]:
        text = strip_think(reply or "").strip()
        if not text:
            return None, "(Your last reply was empty. Reply to the agent, as the customer.)"
        if self.tools:
            parsed = parse_action(text)
            if parsed.error is not None and not parsed.text:
                return None, f"(Your last reply was not a valid tool call: {parsed.error})"
            if parsed.is_tool_call:
                unknown = [c.name for c in parsed.tool_calls if c.name not in self._tool_names]
                if unknown:
                    return None, (f"(You have no tool {unknown}; your tools are "
                                  f"{sorted(self._tool_names)}.)")
                calls = []
                for call in parsed.tool_calls:
                    self._calls += 1
                    calls.append(ToolCall(id=f"user_call_{self._calls}", name=call.name,
                                          arguments=call.arguments, requestor="user"))
                return UserMessage(role="user", tool_calls=calls), None
        return UserMessage(role="user", content=text), None


def to_chat(messages: list[Any]) -> list[dict[str, str]]:
    """τ²-bench messages (roles already flipped for the user) as plain chat messages.

    The user's own tool calls become their JSON text, tool results become ``user`` messages
    prefixed with ``[tool result]`` (OpenAI-compatible servers reject ``tool`` messages without
    call ids), and consecutive messages of one role are merged, which every chat template accepts.
    """
    chat: list[dict[str, str]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            role, content = "system", m.content or ""
        elif m.role == "tool":
            role, content = "user", f"{TOOL_RESULT_PREFIX} {m.content}"
        elif getattr(m, "tool_calls", None):
            calls = [format_tool_call(c.name, c.arguments) for c in m.tool_calls]
            role, content = m.role, calls[0] if len(calls) == 1 else "[" + ", ".join(calls) + "]"
        else:
            role, content = m.role, m.content or ""
        if chat and chat[-1]["role"] == role and role != "system":
            chat[-1]["content"] += "\n\n" + content
        else:
            chat.append({"role": role, "content": content})
    return chat
