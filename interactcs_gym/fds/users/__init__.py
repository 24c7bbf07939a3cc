"""User simulators of the FDS env (SPEC 4.5).

* :mod:`interactcs_gym.fds.users.base`: the :class:`UserSimulator` interface (``start``/``respond``),
  :class:`AgentTurn` (what the user experiences of an agent turn) and :class:`UserReply`.
* :mod:`interactcs_gym.fds.users.persona`: the embedded, offline, rule-based persona simulator,
  composed of :mod:`~interactcs_gym.fds.users.reader` (what the user reads in the agent's turn) and
  :mod:`~interactcs_gym.fds.users.dynamics` (mood and patience, from ``data/persona_effects.yaml``).
* ``interactcs_gym.fds.users.llm``: the LLM role-play simulator (needs a chat back-end).
"""

from interactcs_gym.fds.users.base import END_REASONS, AgentTurn, UserReply, UserSimulator

__all__ = ["UserSimulator", "AgentTurn", "UserReply", "END_REASONS"]
