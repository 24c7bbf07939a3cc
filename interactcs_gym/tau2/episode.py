"""One τ²-bench episode driven one agent action at a time through the official ``Orchestrator``.

The official orchestrator routes every message (agent → user or environment, user → agent or
environment, environment → whoever called), validates messages, detects the stop tokens and
counts steps. Here the agent is external: :class:`ExternalAgent` hands the orchestrator the action
the gym env received, and :class:`Episode` steps the orchestrator until it is the agent's turn
again or the conversation ended. ``Orchestrator.run``'s step limit is applied after every step, as
in ``run``. This module imports τ²-bench (the env imports it lazily).
"""

from __future__ import annotations

from typing import Any

from tau2.agent.base import LocalAgent, is_valid_agent_history_message
from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage
from tau2.data_model.simulation import TerminationReason
from tau2.orchestrator.orchestrator import Orchestrator, Role

from interactcs_gym.tau2.protocol import STOP_TOKEN, ParsedAction


class ExternalAgent(LocalAgent[list]):
    """A τ²-bench agent whose next message is set from outside (the gym env's action)."""

    def __init__(self, tools: list[Any], domain_policy: str) -> None:
        super().__init__(tools=tools, domain_policy=domain_policy)
        self.pending: AssistantMessage | None = None

    def get_init_state(self, message_history: list[Any] | None = None) -> list:
        return [m for m in message_history or [] if is_valid_agent_history_message(m)]

    def generate_next_message(self, message: Any, state: list) -> tuple[AssistantMessage, list]:
        if self.pending is None:
            raise RuntimeError("ExternalAgent asked for a message before one was set")
        reply, self.pending = self.pending, None
        state.append(reply)
        return reply, state

    @classmethod
    def is_stop(cls, message: AssistantMessage) -> bool:
        return not message.is_tool_call() and STOP_TOKEN in (message.content or "")

    def set_seed(self, seed: int) -> None:
        """The external agent has no randomness of its own."""


class Episode:
    """The official orchestrator for one task, advanced by :meth:`act`.

    ``simulator_error`` holds the simulated user's failure when it ended the episode, and
    ``simulator_exception`` the exception itself (the official
    termination is then ``too_many_errors``, which the official evaluator scores 0).
    """

    def __init__(self, *, domain: str, task: Any, environment: Any, user: Any, max_steps: int,
                 seed: int | None) -> None:
        tools = environment.get_tools()
        self.agent = ExternalAgent(tools=tools, domain_policy=environment.get_policy())
        self.environment = environment
        self.orchestrator = Orchestrator(domain=domain, agent=self.agent, user=user,
                                         environment=environment, task=task,
                                         max_steps=max_steps, seed=seed)
        self.simulator_error: str | None = None
        self.simulator_exception: BaseException | None = None
        self._calls = 0

    # ------------------------------------------------------------------ driving
    def start(self) -> list[Any]:
        """Initialise (task state, first greeting) and run until the agent's turn; new messages."""
        orch = self.orchestrator
        orch.initialize()
        return self._advance(0)

    def act(self, parsed: ParsedAction) -> list[Any]:
        """Send the agent's (well-formed) action; the messages that followed it, agent's first."""
        orch = self.orchestrator
        n = len(orch.trajectory)
        self.agent.pending = self._assistant_message(parsed)
        self._step()
        return self._advance(n)

    def _advance(self, n: int) -> list[Any]:
        orch = self.orchestrator
        while not orch.done and orch.to_role != Role.AGENT:
            self._step()
        return list(orch.trajectory[n:])

    def _step(self) -> None:
        orch = self.orchestrator
        user_turn = orch.to_role == Role.USER
        try:
            orch.step()
        except Exception as exc:  # the simulated user failed (back-end down, invalid message)
            if not user_turn:
                raise
            self.simulator_error = f"{type(exc).__name__}: {exc}"
            self.simulator_exception = exc
            orch.done = True
            orch.termination_reason = TerminationReason.TOO_MANY_ERRORS
            return
        if orch.step_count >= orch.max_steps:  # as Orchestrator.run does after every step
            orch.done = True
            orch.termination_reason = TerminationReason.MAX_STEPS

    def count_invalid_turn(self) -> None:
        """A malformed agent turn uses two steps of the budget (its message and the error)."""
        orch = self.orchestrator
        orch.step_count += 2
        if orch.step_count >= orch.max_steps:
            orch.done = True
            orch.termination_reason = TerminationReason.MAX_STEPS

    def _assistant_message(self, parsed: ParsedAction) -> AssistantMessage:
        if not parsed.is_tool_call:
            return AssistantMessage(role="assistant", content=parsed.text)
        calls = []
        for call in parsed.tool_calls:
            self._calls += 1
            calls.append(ToolCall(id=f"gym_call_{self._calls}", name=call.name,
                                  arguments=call.arguments, requestor="assistant"))
        return AssistantMessage(role="assistant", content=parsed.text, tool_calls=calls)

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return bool(self.orchestrator.done)

    @property
    def termination(self) -> TerminationReason | None:
        return self.orchestrator.termination_reason

    @property
    def step_count(self) -> int:
        return int(self.orchestrator.step_count)

    def trajectory(self) -> list[Any]:
        """The official trajectory (what the evaluator replays)."""
        return self.orchestrator.get_trajectory()


def visible_to_agent(message: Any) -> bool:
    """Messages the agent sees: user text, and results of its own tool calls."""
    if isinstance(message, UserMessage):
        return not message.is_tool_call()
    return isinstance(message, ToolMessage) and message.requestor == "assistant"


def tool_call_records(messages: list[Any], requestor: str) -> list[dict[str, Any]]:
    """``[{"name", "arguments", "content", "error"}]`` for the tool calls of ``requestor`` among
    ``messages``, each with the result that answered it."""
    results = {m.id: m for m in messages if isinstance(m, ToolMessage) and m.requestor == requestor}
    records = []
    for m in messages:
        for call in getattr(m, "tool_calls", None) or []:
            if call.requestor != requestor:
                continue
            result = results.get(call.id)
            records.append({"name": call.name, "arguments": dict(call.arguments),
                            "content": result.content if result else None,
                            "error": bool(result.error) if result else None})
    return records
