"""Agents: the :class:`Agent` interface, the reference agents and :func:`load_agent`."""

from interactcs_gym.agents.registry import AGENTS, load_agent
from interactcs_gym.core.agent import Agent

__all__ = ["Agent", "AGENTS", "load_agent"]
