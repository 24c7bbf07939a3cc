"""Agents: the :class:`Agent` interface and the reference agents."""

from interactcs_gym.agents.base import Agent

__all__ = ["Agent"]
