"""interactcs_gym: Gymnasium text-dialogue environments for customer-service agents, with cost.

``import interactcs_gym`` registers every id of ``envs_registry.yaml`` (FDS-Hard-v0, FDS-Easy-v0,
...); ``gym.make("interactcs_gym:FDS-Hard-v0")`` does the same without a prior import.

This package is light: it never imports torch. LLM back-ends need the ``llm`` extra.
"""

from interactcs_gym.core.env import INFO_KEYS, DialogueEnv, Opening, StepOutcome
from interactcs_gym.core.spaces import UnicodeText
from interactcs_gym.registry import register_all, registered_ids

__version__ = "0.1.0"
ENV_IDS = register_all()

__all__ = ["DialogueEnv", "Opening", "StepOutcome", "INFO_KEYS", "UnicodeText", "ENV_IDS", "registered_ids",
           "__version__"]
