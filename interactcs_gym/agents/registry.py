"""Agents by name (``sop``, ``always-voucher`` ...) or by ``module:Class`` for third-party agents."""

from __future__ import annotations

from typing import Any

from interactcs_gym.core.agent import Agent
from interactcs_gym.core.names import build

#: Short names of the reference agents -> "module:Class".
AGENTS: dict[str, str] = {
    "sop": "interactcs_gym.fds.sop_agent:SOPAgent",
    "always-voucher": "interactcs_gym.fds.fixed_agents:AlwaysVoucherAgent",
    "never-voucher": "interactcs_gym.fds.fixed_agents:NeverVoucherAgent",
    "random": "interactcs_gym.fds.fixed_agents:RandomAgent",
    "sop-generous": "interactcs_gym.fds.demo_agents:GenerousSOPAgent",
    "sop-frugal": "interactcs_gym.fds.demo_agents:FrugalSOPAgent",
    "policy": "interactcs_gym.agents.policy:PolicyAgent",
    "llm": "interactcs_gym.agents.llm:LLMAgent",
}


def load_agent(spec: str | Agent, **kwargs: Any) -> Agent:
    """Build an agent from a short name of :data:`AGENTS` or a ``"module:Class"`` path.

    ``kwargs`` go to the class constructor. An :class:`Agent` instance is returned as is.
    """
    return build("agent", AGENTS, Agent, spec, kwargs)
