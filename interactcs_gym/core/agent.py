"""The one small interface every agent implements, ours and third parties' alike."""

from __future__ import annotations

import abc
from typing import Any


class Agent(abc.ABC):
    """An agent maps what it sees to its next turn (a ``str`` action).

    ``reset`` is called before each episode; ``act`` once per turn with the env's observation and
    info (``info["messages"]`` holds the whole dialogue in chat format, system prompt first).

    Optional batching: an agent that can play many episodes at once also defines
    ``act_batch(observations: list[str], infos: list[dict], *, seeds: list[int]) -> list[str]``,
    one turn per row. The evaluation CLI (``--batch-size N``) then plays N episodes in lockstep,
    one env each, with one ``act_batch`` call per turn over the episodes still running (rows may be
    at different turns; ``seeds`` are their episodes' agent seeds, what ``reset`` gets on the
    one-at-a-time path). ``reset`` is not called on the batched path, so a row's state must come
    from its info (``info["messages"]``). An exception from ``act_batch`` is an agent error of
    every episode of the call. Agents without it, or whose ``act_batch`` takes no ``seeds``
    keyword, are played one episode at a time.

    >>> class Echo(Agent):
    ...     def act(self, observation, info):
    ...         return f"<think>echo</think><response>{observation}</response><action>chat</action>"
    """

    @classmethod
    def __subclasshook__(cls, candidate: type) -> bool:
        """Third-party agents need not subclass: any class with a callable ``act`` is an Agent."""
        if cls is Agent:
            return callable(getattr(candidate, "act", None)) or NotImplemented
        return NotImplemented

    #: Short name used in reports; defaults to the class name.
    name: str = ""

    def reset(self, *, seed: int | None = None) -> None:
        """Forget the previous episode; ``seed`` seeds any randomness of the agent."""

    @abc.abstractmethod
    def act(self, observation: str, info: dict[str, Any]) -> str:
        """Return the agent's next turn as text."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
