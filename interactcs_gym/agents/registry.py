"""Agents by name (``sop``, ``always-voucher`` ...) or by ``module:Class`` for third-party agents."""

from __future__ import annotations

from typing import Any

from interactcs_gym._imports import load_attr
from interactcs_gym.agents.base import Agent

#: Short names of the reference agents -> "module:Class".
AGENTS: dict[str, str] = {
    "sop": "interactcs_gym.agents.sop:SOPAgent",
    "always-voucher": "interactcs_gym.agents.fixed:AlwaysVoucherAgent",
    "never-voucher": "interactcs_gym.agents.fixed:NeverVoucherAgent",
    "random": "interactcs_gym.agents.fixed:RandomAgent",
    "sop-generous": "interactcs_gym.agents.sop_generous:GenerousSOPAgent",
    "sop-frugal": "interactcs_gym.agents.sop_generous:FrugalSOPAgent",
    "policy": "interactcs_gym.agents.policy:PolicyAgent",
    "llm": "interactcs_gym.agents.llm:LLMAgent",
}


def load_agent(spec: str | Agent, **kwargs: Any) -> Agent:
    """Build an agent from a short name of :data:`AGENTS` or a ``"module:Class"`` path.

    ``kwargs`` go to the class constructor. An :class:`Agent` instance is returned as is.
    """
    if isinstance(spec, Agent):
        return spec
    target = AGENTS.get(spec, spec)
    if ":" not in target:
        raise ValueError(f"unknown agent {spec!r}: use one of {sorted(AGENTS)} or 'module:Class'")
    cls = load_attr(target, what="agent")
    agent = cls(**kwargs)
    if not callable(getattr(agent, "act", None)):
        raise TypeError(f"{target} does not implement act(observation, info) -> str")
    return agent
