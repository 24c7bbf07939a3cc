"""cmpo: Cost-aware Multi-turn Policy Optimisation (hybrid advantage + generative process reward +
PID-Lagrangian cost control) for LLM policies trained against any registered Gymnasium text env.

``accelerate launch -m cmpo.train --config cfg.yaml``. Importing ``cmpo`` is cheap; torch is only
imported by the modules that need it.
"""

__version__ = "0.1.0"
