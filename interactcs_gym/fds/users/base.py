"""The user-simulator interface of the FDS env (SPEC 4.5).

Two implementations: the embedded, offline :class:`~interactcs_gym.fds.users.persona.PersonaUserSimulator`
and the LLM role-play simulator (``interactcs_gym.fds.users.llm.LLMUserSimulator``). The env drives a
simulator like this::

    first = sim.start(order, persona, rng)          # the user's opening message
    reply = sim.respond(AgentTurn(...))             # once per agent turn
    reply.utterance, reply.satisfaction, reply.done, reply.end_reason

A simulator owns the user's hidden state (mood, patience, what they have disclosed). It sees the
agent only through :class:`AgentTurn`: the text the user reads (the env's best-effort extraction of
the ``<response>`` block; never the ``<think>`` block) and what the platform did (whether a voucher
was issued with this turn). Nothing the agent writes can set the satisfaction directly.

Contract (checked by the env):

* ``satisfaction`` is an ``int`` in 1..5 in every reply; the reply that ends the episode carries the
  final satisfaction, and when the env truncates after ``max_turns``, the reply to the last turn
  (``turn.is_last``) carries it.
* ``done`` is the user's end signal; ``end_reason`` is ``"satisfied"`` (the user accepts the outcome
  and closes) or ``"refused"`` (the user gives up or leaves dissatisfied) when ``done``, else
  ``None``. ``"simulator_error"`` is reserved for a simulator that cannot continue (e.g. an LLM
  whose metadata stays malformed after its retries): the episode ends cleanly with that reason.
* ``nondeterministic`` is ``False`` only for simulators that replay bit for bit given the ``rng``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # data models only; no runtime import cycle with interactcs_gym.fds
    from interactcs_gym.fds.personas import Persona
    from interactcs_gym.fds.scenarios import Order

END_REASONS = ("satisfied", "refused", "simulator_error")


@dataclass(frozen=True)
class AgentTurn:
    """One agent turn as the user experiences it.

    ``text``: what the user reads. ``action``: ``"chat"``/``"voucher"`` as named by the turn, or
    ``None`` when the turn named no valid action. ``voucher_issued``: the platform issued a voucher
    with this turn (only a well-formed first ``voucher`` turn does). ``format_ok``: the turn followed
    the protocol. ``turn``: 1-based agent turn number. ``is_last``: this is turn ``max_turns``; the
    reply is the user's last word and carries the final satisfaction.
    """

    text: str
    action: str | None
    voucher_issued: bool
    format_ok: bool
    turn: int
    is_last: bool = False


@dataclass(frozen=True)
class UserReply:
    """The user's answer: ``utterance``, current ``satisfaction`` 1-5, end signal and reason.

    ``info`` carries optional simulator bookkeeping for logs and judges (e.g. ``evidence_shared``);
    it is never shown to the agent.
    """

    utterance: str
    satisfaction: int
    done: bool = False
    end_reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.satisfaction, int) or not 1 <= self.satisfaction <= 5:
            raise ValueError(f"satisfaction must be an int in 1..5, got {self.satisfaction!r}")
        if self.done and self.end_reason not in END_REASONS:
            raise ValueError(f"a final reply needs end_reason in {END_REASONS}, got {self.end_reason!r}")
        if not self.done and self.end_reason is not None:
            raise ValueError("end_reason is only set on the reply that ends the episode")


class UserSimulator(abc.ABC):
    """A simulated user for one episode at a time (``start`` begins a new one)."""

    #: True when the same rng and agent turns may still give different replies (LLM back-ends).
    nondeterministic: bool = False
    #: Short name recorded in ``info["task"]["user_simulator"]``.
    name: str = "user"

    @abc.abstractmethod
    def start(self, order: Order, persona: Persona, rng: np.random.Generator) -> str:
        """Begin an episode about ``order`` as ``persona``; return the user's first utterance."""

    @abc.abstractmethod
    def respond(self, turn: AgentTurn) -> UserReply:
        """React to one agent turn."""

    def close(self) -> None:
        """Release resources (back-end connections). Called by ``env.close()``."""
